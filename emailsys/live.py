"""Live updates: full-state snapshots of live objects, versioned by PostgreSQL, published to channel-layer groups
after commit; consumers (emailsys/consumers.py) relay them to the pages, which keep the newest version.

A *kind* (work order, campaign, sender account, the dashboard) is registered once (`live_kind_register`, from its
app's `ready`) with what reads its state (`snapshot`, JSON) and what renders it (`render`: element id → HTML,
the same templates the page uses at load). Its objects are announced two ways:

- `live_changed(kind, id)` inside the transaction that changed the object: its `live_version` is incremented by
  an UPDATE in that transaction (the row lock orders concurrent writers), the snapshot is read after it, and the
  message goes out once the transaction commits. For state transitions: they reach the pages at once.
- `live_progress(kind, id)` on hot paths (an email sent): only marks the object; a thread of this process
  publishes it at most every LIVE_PROGRESS_SECONDS *across all processes* (a Redis gate), and the last change
  is always published (a mark stays until its process passes the gate). Costs a set insertion per call.

Messages: `{"kind", "id", "key", "version", "data", "fragments"}` (`key` names the object on the page). Versions
only grow, so a page drops any message older than what it shows; snapshots are full state, so duplicates and
reordering are harmless.

Publishing runs on one event loop per process, in a daemon thread started on first use (again after a fork):
`async_to_sync` from Celery threads would make a loop per call and leak the channel layer's connections to
closed loops ("Event loop is closed"). A forked child (a Celery prefork child) starts with fresh locks, loop,
coalescer and channel layer: the parent's may be held or bound to a thread that did not survive the fork, and its
sockets are the parent's. A worker process publishes its pending marks as it shuts down.

A live outage never fails the work it reports: errors are logged, and for LIVE_OUTAGE_SECONDS after a failure
this process publishes nothing (a worker then does not wait for an unreachable channel layer at every step);
pages resync when their sockets reconnect.
"""

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from celery import signals
from channels.layers import channel_layers, get_channel_layer
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Model

logger = logging.getLogger(__name__)

LIVE_MESSAGE_TYPE = "live.message"
PUBLISH_TIMEOUT_SECONDS = 5.0
LIVE_OUTAGE_SECONDS = 5.0  # after a failed publish, this process skips publishing this long
SINGLETON_ID = 0  # the id of a kind without rows (the dashboard): group and key are the kind's name
DASHBOARD_VERSION_SEQUENCE = "emailsys_live_dashboard_version"


# --- kinds ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveKind:
    name: str  # "workorder": groups "workorder-<id>", element keys "workorder-<id>"
    # Its rows carry `live_version`; None: a singleton versioned by `version_sequence`.
    model: type[Model] | None
    snapshot: Callable[[int], dict | None]  # JSON-able state of an object; None: it does not exist (any more)
    render: Callable[[int, dict], dict[str, str]]  # element id → HTML fragment, from the snapshot
    also_groups: tuple[str, ...] = ()  # published there too, e.g. ("dashboard",)
    version_sequence: str = ""

    def key(self, object_id: int) -> str:
        return self.name if self.model is None else f"{self.name}-{object_id}"

    def groups(self, object_id: int) -> list[str]:
        return [self.key(object_id), *self.also_groups]


LIVE_KINDS: dict[str, LiveKind] = {}


def live_kind_register(kind: LiveKind) -> None:
    LIVE_KINDS[kind.name] = kind


def live_group_objects(group: str) -> list[tuple[str, int]]:
    """The (kind, id) whose snapshot a client of `group` gets on connecting: "workorder-42" → [("workorder", 42)],
    "dashboard" → [("dashboard", 0)]; a group of no registered kind → []."""
    name, _, object_id = group.partition("-")
    kind = LIVE_KINDS.get(name)
    if kind is None or (kind.model is None) != (object_id == ""):
        return []
    return [(name, int(object_id) if object_id else SINGLETON_ID)]


# --- versions and payloads -----------------------------------------------------------------------------------


def _version_next(kind: LiveKind, object_id: int) -> int | None:
    """Increments the object's version in the caller's transaction (None: no such row)."""
    with connection.cursor() as cursor:
        if kind.model is None:
            cursor.execute("SELECT nextval(%s)", [kind.version_sequence])
        else:
            table = connection.ops.quote_name(kind.model._meta.db_table)
            cursor.execute(
                f"UPDATE {table} SET live_version = live_version + 1 WHERE id = %s RETURNING live_version",  # noqa: S608
                [object_id],
            )
        row = cursor.fetchone()
    return row[0] if row else None


def _version_current(kind: LiveKind, object_id: int) -> int | None:
    if kind.model is None:
        with connection.cursor() as cursor:
            # An unused sequence's last_value is its start (1), which its first nextval also returns.
            sequence = connection.ops.quote_name(kind.version_sequence)
            cursor.execute(f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {sequence}")  # noqa: S608
            return cursor.fetchone()[0]
    return kind.model._default_manager.filter(pk=object_id).values_list("live_version", flat=True).first()


def live_version_bump() -> dict[str, Any]:
    """`**live_version_bump()` in an `.update(...)` that changes a live object's state: the same UPDATE increments
    its version (e.g. `WorkOrder.objects.filter(id=…).update(status=…, **live_version_bump())`)."""
    return {"live_version": F("live_version") + 1}


def _payload(kind: LiveKind, object_id: int, version: int) -> dict | None:
    data = kind.snapshot(object_id)
    if data is None:
        return None
    payload = {"kind": kind.name, "id": object_id, "key": kind.key(object_id), "version": version, "data": data}
    payload["fragments"] = kind.render(object_id, payload)
    return payload


def live_current(kind_name: str, object_id: int) -> dict | None:
    """The object's payload as it stands (for a client that just connected); None when it does not exist.

    The version is read before the state: a change committed in between is then shown under the older version
    and shown again by its own message, never the other way round (newer version, older state)."""
    kind = LIVE_KINDS[kind_name]
    with transaction.atomic():
        version = _version_current(kind, object_id)
        return None if version is None else _payload(kind, object_id, version)


def live_changed(kind_name: str, object_id: int) -> None:
    """Call inside the transaction that changed the object (or anywhere: then it runs in its own): the version is
    incremented and the snapshot read in it, the message published after commit. Never raises."""
    kind = LIVE_KINDS[kind_name]
    try:
        with transaction.atomic():  # a savepoint inside the caller's transaction: a failure here leaves it intact
            version = _version_next(kind, object_id)
            payload = None if version is None else _payload(kind, object_id, version)
    except Exception:
        logger.exception("live snapshot of %s failed", kind.key(object_id))
        return
    if payload is not None:
        groups = kind.groups(object_id)
        transaction.on_commit(lambda: live_publish_groups(groups=groups, payload=payload))


def live_progress(kind_name: str, object_id: int) -> None:
    """Hot paths: announces a change after commit, coalesced (see the module docstring). Cheap; never raises."""
    key = (kind_name, object_id)
    transaction.on_commit(lambda: _coalescer().mark(key))


# --- publishing ----------------------------------------------------------------------------------------------


class _LiveLoop:
    """One asyncio loop per process, in a daemon thread, for every channel-layer call made from sync code."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.down_until = 0.0  # time.monotonic() before which publishing is skipped (a recent failure)

    def submit(self, make: Callable[[], Coroutine]) -> Future:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="live-publisher", daemon=True).start()
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(make(), loop)

    def after_fork_in_child(self) -> None:
        """The parent's thread is gone and its lock may have been held at the fork."""
        self._lock = threading.Lock()
        self._loop = None
        self.down_until = 0.0


_live_loop = _LiveLoop()


def live_publish_groups(*, groups: list[str], payload: dict) -> bool:
    """Sends `payload` to each group now and waits for it; False (logged) when the channel layer failed or failed
    less than LIVE_OUTAGE_SECONDS ago."""
    if time.monotonic() < _live_loop.down_until:
        return False
    layer = get_channel_layer()

    async def send_all() -> None:
        for group in groups:  # the group in the message: a process's sockets share one channel (consumers.py)
            await layer.group_send(group, {"type": LIVE_MESSAGE_TYPE, "group": group, "payload": payload})

    try:
        _live_loop.submit(send_all).result(timeout=PUBLISH_TIMEOUT_SECONDS)
    except Exception as error:  # noqa: BLE001 - the work being reported must go on
        _live_loop.down_until = time.monotonic() + LIVE_OUTAGE_SECONDS
        logger.warning(
            "live publish to %s failed (%s: %s); not publishing for %ss",
            ",".join(groups), type(error).__name__, error, LIVE_OUTAGE_SECONDS,
        )  # fmt: skip
        return False
    from emailsys.metrics import live_count

    live_count("published", len(groups))
    return True


def live_publish_now(*, group: str, payload: dict) -> bool:
    return live_publish_groups(groups=[group], payload=payload)


def live_broadcast(*, group: str, payload: dict) -> None:
    """Publishes after the surrounding transaction commits, so no client sees state that was rolled back."""
    transaction.on_commit(lambda: live_publish_now(group=group, payload=payload))


# --- coalescing ----------------------------------------------------------------------------------------------


@dataclass
class _Coalescer:
    """Marked objects of this process, published by its thread when the shared gate lets it (see the module)."""

    pending: set[tuple[str, int]] = field(default_factory=set)
    folded: int = 0  # marks of an object already pending: they cost no message (emailsys_live_messages "coalesced")
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Held through a flush: `live_flush` at shutdown waits for the thread's flush, whose keys left `pending`.
    flushing: threading.Lock = field(default_factory=threading.Lock)
    started: bool = False

    def mark(self, key: tuple[str, int]) -> None:
        with self.lock:
            if key in self.pending:
                self.folded += 1
            else:
                self.pending.add(key)
            if not self.started:
                self.started = True
                threading.Thread(target=self._run, name="live-coalescer", daemon=True).start()

    def _run(self) -> None:
        """Its own DB connection, closed after each flush (an idle process holds none)."""
        tick = float(settings.LIVE_FLUSH_TICK_SECONDS)
        while True:
            time.sleep(tick)  # the pace of the flushes, not a wait for a condition
            if not self.pending:
                continue
            try:
                self.flush()
            except Exception:
                logger.exception("live coalescer flush failed")
            finally:
                connection.close()

    def flush(self, *, gated: bool = True) -> None:
        with self.flushing:
            self._flush(gated=gated)

    def _flush(self, *, gated: bool) -> None:
        from emailsys.metrics import live_count

        with self.lock:
            keys, folded = sorted(self.pending), self.folded
            self.folded = 0
        if folded:
            live_count("coalesced", folded)
        for key in keys:
            if gated and not _gate_pass(*key):
                continue
            with self.lock:
                self.pending.discard(key)
            live_changed(*key)


def _gate_pass(kind_name: str, object_id: int) -> bool:
    """True for at most one caller per LIVE_PROGRESS_SECONDS and object, across processes and hosts."""
    from emailsys.ops_clients import ops_redis

    try:
        gate = f"emailsys:live:gate:{LIVE_KINDS[kind_name].key(object_id)}"
        return bool(ops_redis().set(gate, "1", nx=True, px=int(float(settings.LIVE_PROGRESS_SECONDS) * 1000)))
    except Exception as error:  # noqa: BLE001 - without Redis, publish (the channel layer needs it anyway)
        logger.warning("live gate unavailable: %s", type(error).__name__)
        return True


_coalescer_lock = threading.Lock()
_coalescer_instance: _Coalescer | None = None


def _coalescer() -> _Coalescer:
    global _coalescer_instance
    if _coalescer_instance is None:
        with _coalescer_lock:
            if _coalescer_instance is None:
                _coalescer_instance = _Coalescer()
    return _coalescer_instance


def live_flush() -> None:
    """Publishes every pending mark of this process now, gate or not, once the thread's flush in progress has ended
    (worker shutdown: a daemon thread dies mid-publish at exit)."""
    if _coalescer_instance is not None:
        _coalescer_instance.flush(gated=False)


def live_discard() -> None:
    """Drops this process's pending marks once the thread's flush in progress has ended: from then on the thread
    reads nothing (test teardown: a snapshot read while the test database is flushed deadlocks the flush)."""
    if _coalescer_instance is not None:
        with _coalescer_instance.flushing, _coalescer_instance.lock:
            _coalescer_instance.pending.clear()
            _coalescer_instance.folded = 0


@signals.worker_process_shutdown.connect  # a prefork child
@signals.worker_shutdown.connect  # the worker's main process (threads and solo pools run tasks there)
def _flush_at_worker_shutdown(**_kwargs) -> None:
    from emailsys.metrics import live_metrics_write

    try:
        live_flush()
        live_metrics_write()
    except Exception:
        logger.exception("live flush at worker shutdown failed")
    finally:
        connection.close()


def _after_fork_in_child() -> None:
    """A forked child shares nothing live with its parent: not its threads (gone), locks (maybe held at the
    fork), pending marks (the parent publishes them) nor the channel layer's sockets."""
    global _coalescer_instance, _coalescer_lock
    _live_loop.after_fork_in_child()
    _coalescer_lock, _coalescer_instance = threading.Lock(), None
    channel_layers.backends = {}


os.register_at_fork(after_in_child=_after_fork_in_child)
