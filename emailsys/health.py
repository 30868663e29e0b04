"""System health for /healthz: every component probed concurrently with short timeouts.

A probe never raises: a failure becomes an unhealthy component with a reason, so the endpoint always
answers within a few seconds even when Redis, the broker or PostgreSQL hang or are gone.
"""

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime

from django.conf import settings
from django.db import connection

from emailsys.beat_lock import beat_lock_holder
from emailsys.celery import app as celery_app
from emailsys.models import OutboxEvent, ReceivedEvent
from emailsys.ops_clients import ops_broker_connection, ops_redis
from emailsys.sqs import sqs_configured

logger = logging.getLogger(__name__)

BEAT_TICK_KEY = "emailsys:beat:last_tick"
HEARTBEAT_KEY = "emailsys:heartbeat:last_run"  # written by the heartbeat task (emailsys.tasks)
PROBE_DEADLINE_SECONDS = 4.0
PROCESS_HEARTBEATS_KEY = "emailsys:heartbeats:{role}"  # hash: "<host>:<pid>" → {"at": unix time, **extra}
# How stale a loop's heartbeat may be: the IMAP supervisor writes one per settings refresh (30 s by default).
IMAP_IDLE_HEARTBEAT_MAX_AGE = 120.0


@dataclass(frozen=True)
class ComponentHealth:
    name: str
    healthy: bool
    detail: str
    latency_ms: float = 0.0
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SystemHealth:
    components: list[ComponentHealth]

    @property
    def healthy(self) -> bool:
        return all(component.healthy for component in self.components)

    def as_dict(self) -> dict:
        return {
            "status": "ok" if self.healthy else "unhealthy",
            "unhealthy": [c.name for c in self.components if not c.healthy],
            "components": {c.name: {k: v for k, v in asdict(c).items() if k != "name"} for c in self.components},
        }


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300]


def _probe_database() -> list[ComponentHealth]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    connection.close()  # probe threads are short-lived; do not leak their connections
    return [ComponentHealth("database", True, "SELECT 1 answered")]


def _probe_redis() -> list[ComponentHealth]:
    ops_redis().ping()
    return [ComponentHealth("redis", True, "PING answered")]


def _probe_broker() -> list[ComponentHealth]:
    with ops_broker_connection() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
        transport = conn.transport_cls
    return [ComponentHealth("broker", True, f"connected ({transport})")]


def workers_by_pool(*, timeout: float) -> dict[str, list[str]]:
    """The workers consuming each pool's queue that answered a broadcast within `timeout` seconds (a Celery
    inspect: it waits the whole timeout, so call it off the hot path). Raises when the broker is unreachable."""
    with ops_broker_connection() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
        replies = celery_app.control.inspect(timeout=timeout, connection=conn).active_queues()
    workers: dict[str, list[str]] = {pool: [] for pool in settings.WORKER_POOLS}
    for worker, queues in (replies or {}).items():
        for queue in queues:
            workers.setdefault(queue["name"], []).append(worker)
    return {pool: sorted(names) for pool, names in workers.items()}


def _probe_worker_pools() -> list[ComponentHealth]:
    """A pool is healthy when at least one worker consuming its queue answers within the timeout."""
    workers_by_queue = workers_by_pool(timeout=settings.HEALTHZ_WORKER_TIMEOUT)
    return [
        ComponentHealth(
            f"worker:{pool}",
            bool(workers_by_queue[pool]),
            f"{len(workers_by_queue[pool])} worker(s) answered" if workers_by_queue[pool] else "no worker answered",
            extra={"workers": workers_by_queue[pool]},
        )
        for pool in settings.WORKER_POOLS
    ]


def redis_timestamp_age(key: str) -> float | None:
    """Seconds since the time (a float of time.time()) stored at `key`, or None when it was never stored."""
    raw = ops_redis().get(key)
    return None if raw is None else max(0.0, time.time() - float(raw))


def beat_tick_age() -> float | None:
    """Seconds since beat's scheduler last ticked (None: never)."""
    return redis_timestamp_age(BEAT_TICK_KEY)


def _probe_beat() -> list[ComponentHealth]:
    """The last tick's age, and which beat holds the lock (the one ticking; "lock_holder": null when none does)."""
    age = beat_tick_age()
    try:
        extra = {"lock_holder": beat_lock_holder()}
    except Exception as error:  # noqa: BLE001 - the database's own probe reports it; beat's ticks still count
        extra = {"lock_holder_error": _describe(error)}
    finally:
        connection.close()  # probe threads are short-lived; do not leak their connections
    if age is None:
        return [ComponentHealth("beat", False, "beat has never ticked", extra=extra)]
    healthy = age <= settings.HEALTHZ_BEAT_MAX_AGE
    detail = f"last tick {age:.1f}s ago" + ("" if healthy else f" (limit {settings.HEALTHZ_BEAT_MAX_AGE:.0f}s)")
    return [ComponentHealth("beat", healthy, detail, extra={"last_tick_age_s": round(age, 3), **extra})]


def sqs_bridge_state(*, now: datetime) -> dict:
    """What the SQS bridge last did, from the event tables (its loop's liveness is sqs_bridge_health): when it last
    recorded a message, and whether the newest event published to SQS was received — `waiting_s`, how long it has
    been waiting, is > 0 when the bridge is behind or down. Two index reads; {"configured": False} without SQS."""
    if not sqs_configured():
        return {"configured": False}
    last = ReceivedEvent.objects.filter(via=ReceivedEvent.Via.SQS).order_by("-id").values("received_at").first()
    newest = OutboxEvent.objects.filter(published_at__isnull=False).order_by("-id").values("id", "published_at")
    newest = newest.first()
    waiting = newest is not None and not ReceivedEvent.objects.filter(outbox_id=newest["id"]).exists()
    return {
        "configured": True,
        "last_received_age_s": round((now - last["received_at"]).total_seconds(), 1) if last else None,
        "waiting_s": round(max(0.0, (now - newest["published_at"]).total_seconds()), 1) if waiting else 0.0,
    }


def _probe_archiver() -> list[ComponentHealth]:
    """The archiver's heartbeat (archive/services/health.py): healthy while one archiver's loop reported within
    ARCHIVE_HEARTBEAT_MAX_AGE."""
    from archive.services.health import archiver_health

    state = archiver_health()
    extra = {"archivers": state["archivers"], "last_heartbeat_age_s": state["last_heartbeat_age_seconds"]}
    return [ComponentHealth("archiver", state["healthy"], state["detail"], extra=extra)]


PROBES: dict[str, Callable[[], list[ComponentHealth]]] = {
    "database": _probe_database,
    "redis": _probe_redis,
    "broker": _probe_broker,
    "workers": _probe_worker_pools,
    "beat": _probe_beat,
}
# Components a deployment may not run: probed only when their setting says they are part of it (an archiver that
# is not configured is not unhealthy).
OPTIONAL_PROBES: dict[str, tuple[Callable[[], bool], Callable[[], list[ComponentHealth]]]] = {
    "archiver": (lambda: settings.ARCHIVE_ENABLED, _probe_archiver),
    "sqs-bridge": (sqs_configured, lambda: [sqs_bridge_health()]),
}


def probes_enabled() -> dict[str, Callable[[], list[ComponentHealth]]]:
    """The probes /healthz runs: every one of PROBES, and those of OPTIONAL_PROBES whose component is configured."""
    optional = {name: probe for name, (enabled, probe) in OPTIONAL_PROBES.items() if enabled()}
    return {**PROBES, **optional}


def _failed(probe_name: str, detail: str) -> list[ComponentHealth]:
    if probe_name == "workers":
        return [ComponentHealth(f"worker:{pool}", False, detail) for pool in settings.WORKER_POOLS]
    return [ComponentHealth(probe_name, False, detail)]


def _run_probe(name: str, probe: Callable[[], list[ComponentHealth]]) -> list[ComponentHealth]:
    started = time.monotonic()
    try:
        results = probe()
    except Exception as error:  # noqa: BLE001 - any failure is a health verdict, not a crash
        results = _failed(name, _describe(error))
    latency_ms = round((time.monotonic() - started) * 1000, 1)
    return [replace(component, latency_ms=latency_ms) for component in results]


def system_health_check() -> SystemHealth:
    """Runs every probe in parallel; a probe that does not finish within the deadline counts as unhealthy."""
    probes = probes_enabled()
    executor = ThreadPoolExecutor(max_workers=len(probes), thread_name_prefix="healthz")
    started = time.monotonic()
    futures = {name: executor.submit(_run_probe, name, probe) for name, probe in probes.items()}
    components: list[ComponentHealth] = []
    for name, future in futures.items():
        remaining = max(0.0, PROBE_DEADLINE_SECONDS - (time.monotonic() - started))
        try:
            components.extend(future.result(timeout=remaining))
        except FutureTimeout:
            components.extend(_failed(name, f"no answer within {PROBE_DEADLINE_SECONDS:.0f}s"))
    executor.shutdown(wait=False, cancel_futures=True)
    return SystemHealth(components)


def beat_record_tick(*, at: float) -> None:
    """Called by beat's scheduler on every tick; a Redis outage must not stop beat, so errors are logged."""
    try:
        ops_redis().set(BEAT_TICK_KEY, repr(at))
    except Exception as error:  # noqa: BLE001
        logger.warning("could not record beat tick: %s", _describe(error))


# --- Process heartbeats: long-running loops that are not Celery workers (SQS bridge, archiver, IMAP IDLE) ----------


def process_heartbeats_key(role: str) -> str:
    return PROCESS_HEARTBEATS_KEY.format(role=role)


def process_identity() -> str:
    """ "<host>:<pid>": one heartbeat per process, so several of a role on one host (or pod) are told apart."""
    return f"{socket.gethostname()}:{os.getpid()}"


def process_heartbeat_record(*, role: str, extra: dict | None = None) -> None:
    """Records that this process's loop of `role` is alive. Called from the loop itself, so a hung loop stops
    beating even while the process lives. Redis being away is logged, never raised: the loop goes on."""
    beat = json.dumps({"at": time.time(), **(extra or {})})
    try:
        ops_redis().hset(process_heartbeats_key(role), process_identity(), beat)
    except Exception as error:  # noqa: BLE001 - the heartbeat is advisory
        logger.warning("%s heartbeat not written: %s", role, _describe(error))


def process_heartbeat_ages(*, role: str, forget_after: float) -> dict[str, float]:
    """Seconds since each process of `role` last beat, by "<host>:<pid>". Heartbeats older than `forget_after`
    are deleted (processes gone for good). Raises when Redis cannot be read."""
    beats = {
        name.decode(): json.loads(value) for name, value in ops_redis().hgetall(process_heartbeats_key(role)).items()
    }
    now = time.time()
    ages = {name: max(0.0, now - float(beat.get("at", 0))) for name, beat in beats.items()}
    gone = [name for name, age in ages.items() if age > forget_after]
    if gone:
        try:
            ops_redis().hdel(process_heartbeats_key(role), *gone)
        except Exception:  # noqa: BLE001, S110 - forgetting is housekeeping
            pass
    return {name: age for name, age in ages.items() if age <= forget_after}


def process_heartbeat_health(*, role: str, max_age_seconds: float, host: str | None = None) -> ComponentHealth:
    """Healthy while some process of `role` (on `host` only, when given: a probe checks its own pod or VM) beat
    within `max_age_seconds`. Never raises. extra: {"alive": n, "last_heartbeat_age_s": newest or None}."""
    try:
        ages = process_heartbeat_ages(role=role, forget_after=10 * max_age_seconds)
    except Exception as error:  # noqa: BLE001 - a probe reports, it does not raise
        return ComponentHealth(role, False, f"heartbeats unreadable: {_describe(error)}"[:300])
    if host is not None:
        ages = {name: age for name, age in ages.items() if name.rpartition(":")[0] == host}
    fresh = [name for name, age in ages.items() if age <= max_age_seconds]
    newest = min(ages.values()) if ages else None
    where = f" on {host}" if host is not None else ""
    if fresh:
        detail = f"{len(fresh)} {role}(s) alive{where}"
    elif newest is None:
        detail = f"no {role} has reported{where}"
    else:
        detail = f"last {role} heartbeat{where} {newest:.0f}s ago (limit {max_age_seconds:.0f}s)"
    extra = {"alive": len(fresh), "last_heartbeat_age_s": None if newest is None else round(newest, 1)}
    return ComponentHealth(role, bool(fresh), detail, extra=extra)


def sqs_bridge_heartbeat_max_age() -> float:
    """The bridge beats once per long poll (SQS_WAIT_SECONDS) and per message: three polls missed is a hung loop."""
    return max(60.0, 3.0 * settings.SQS_WAIT_SECONDS)


def sqs_bridge_health(*, host: str | None = None) -> ComponentHealth:
    """The SQS bridge's heartbeat (healthy, and says so, when SQS is not configured: events then go straight to
    Celery and no bridge runs)."""
    if not sqs_configured():
        return ComponentHealth("sqs-bridge", True, "SQS not configured: events go straight to Celery")
    return process_heartbeat_health(role="sqs-bridge", max_age_seconds=sqs_bridge_heartbeat_max_age(), host=host)
