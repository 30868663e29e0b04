"""Celery task metrics for /metrics, shared across machines through Redis.

Worker processes (any number, on any host) add each finished task to one Redis hash from Celery's signals;
the web process exposes them with a Prometheus collector, together with each queue's depth read from the
broker. HTTP request metrics come from django-prometheus's middleware.
"""

import atexit
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence

from celery import signals
from django.conf import settings
from kombu import Connection
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from emailsys.ops_clients import ops_broker_connection, ops_redis

logger = logging.getLogger(__name__)

TASK_METRICS_KEY = "emailsys:metrics:tasks"
EVENT_METRICS_KEY = "emailsys:metrics:events"
# Things that happen inside tasks and that an operator should see counted: emailsys_events_total{event=…}.
EVENTS = {
    "stale_batch_leads": "leads in a send batch whose claim was no longer current: that copy did nothing for them",
    "reservations_given_back": "sends reserved on an account that no send row claimed within their lease (the "
    "worker died): given back to the account's day",
}
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
STATE_NAMES = {"SUCCESS": "succeeded", "FAILURE": "failed", "RETRY": "retried", "REJECTED": "rejected"}
_SEP = "\x1f"
LIVE_METRICS_KEY = "emailsys:metrics:live"
# What live updates do (emailsys/live.py, emailsys/consumers.py): emailsys_live_messages_total{outcome=…}.
LIVE_OUTCOMES = {
    "published": "snapshots sent to a channel-layer group",
    "delivered": "snapshots sent to a WebSocket client",
    "coalesced": "progress marks folded into a later snapshot instead of a message of their own",
}
LIVE_FLUSH_SECONDS = 1.0

_started_at: dict[str, float] = {}


def histogram_observe(pipe, key: str, label: str, seconds: float, buckets: tuple[float, ...]) -> None:
    """Adds one observation of `label` to the histogram kept in the Redis hash `key` (on the caller's pipeline):
    shared by every process, read back by `histogram_add`."""
    histogram_observe_many(pipe, key, [(label, seconds)], buckets)


def histogram_observe_many(pipe, key: str, observations: list[tuple[str, float]], buckets: tuple[float, ...]) -> None:
    """A batch of observations summed here first: one increment per field the batch touches (a cumulative bucket
    per bound, the sum and the count per label), not one per observation and bound."""
    counts: dict[str, int] = {}
    sums: dict[str, float] = {}
    for label, seconds in observations:
        sums[label] = sums.get(label, 0.0) + seconds
        counts[f"{label}{_SEP}count"] = counts.get(f"{label}{_SEP}count", 0) + 1
        for bound in buckets:
            if seconds <= bound:
                field = f"{label}{_SEP}le{_SEP}{bound}"
                counts[field] = counts.get(field, 0) + 1
    for label, total in sums.items():
        pipe.hincrbyfloat(key, f"{label}{_SEP}sum", total)
    for field, amount in counts.items():
        pipe.hincrby(key, field, amount)


def histogram_add(family: HistogramMetricFamily, fields: dict[str, str], buckets: tuple[float, ...]) -> None:
    """Adds to `family` each label's histogram that `histogram_observe` kept in a hash (its decoded fields; other
    fields of the hash are left alone)."""
    histograms: dict[str, dict[str, float]] = {}
    for key, value in fields.items():
        label, kind, *rest = key.split(_SEP)
        if kind in ("sum", "count"):
            histograms.setdefault(label, {})[kind] = float(value)
        elif kind == "le":
            histograms.setdefault(label, {})[rest[0]] = float(value)
    for label, values in sorted(histograms.items()):
        counts = [(str(bound), values.get(str(bound), 0.0)) for bound in buckets]
        counts.append(("+Inf", values.get("count", 0.0)))
        family.add_metric([label], buckets=counts, sum_value=values.get("sum", 0.0))


def task_record_finished(*, task_name: str, state: str, runtime_seconds: float | None) -> None:
    """Adds one finished task to the shared counters; never raises (a metrics outage must not fail tasks)."""
    state_name = STATE_NAMES.get(state, state.lower())
    try:
        pipe = ops_redis().pipeline(transaction=False)
        pipe.hincrby(TASK_METRICS_KEY, f"{task_name}{_SEP}state{_SEP}{state_name}", 1)
        if runtime_seconds is not None:
            histogram_observe(pipe, TASK_METRICS_KEY, task_name, runtime_seconds, RUNTIME_BUCKETS)
        pipe.execute()
    except Exception as error:  # noqa: BLE001
        logger.warning("could not record metrics for %s: %s", task_name, type(error).__name__)


def event_count(event: str, amount: int = 1) -> None:
    """Adds to a shared event counter; never raises (a metrics outage must not fail the work it counts)."""
    assert event in EVENTS, event
    try:
        ops_redis().hincrby(EVENT_METRICS_KEY, event, amount)
    except Exception as error:  # noqa: BLE001
        logger.warning("could not count %s: %s", event, type(error).__name__)


LIVE_SOCKETS_KEY_PREFIX = "emailsys:metrics:live:sockets:"  # + "<host>:<pid>" → that process's open sockets
LIVE_SOCKETS_TTL_SECONDS = 60  # a killed process's sockets vanish from the gauge within this
LIVE_SOCKETS_REFRESH_SECONDS = 20.0


class _LiveMetrics:
    """This process's live counts and open sockets, written to Redis by a daemon thread about once a second (so
    neither a publisher nor the WebSocket fan-out waits for Redis); the sockets under a key that expires unless
    refreshed. Started on first use, again in a forked child (which starts from zero)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()  # one write at a time: the exit's waits for the thread's
        self.counts: dict[str, int] = {}
        self.sockets = 0
        self.sockets_written: tuple[int, float] | None = None  # (count, monotonic time) last written
        self.started = False

    def count(self, outcome: str, amount: int) -> None:
        with self.lock:
            self.counts[outcome] = self.counts.get(outcome, 0) + amount
            self._start()

    def sockets_change(self, delta: int) -> None:
        with self.lock:
            self.sockets += delta
            self._start()

    def _start(self) -> None:
        if not self.started:
            self.started = True
            threading.Thread(target=self._run, name="live-metrics", daemon=True).start()
            atexit.register(self._write_at_exit)  # the last second's counts (a prefork child: worker_process_shutdown)

    def _write_at_exit(self) -> None:
        try:
            self.write()
        except Exception as error:  # noqa: BLE001
            logger.warning("could not write live metrics at exit: %s", type(error).__name__)

    def _run(self) -> None:
        while True:
            time.sleep(LIVE_FLUSH_SECONDS)  # the pace of the writes
            try:
                self.write()
            except Exception as error:  # noqa: BLE001
                logger.warning("could not write live metrics: %s", type(error).__name__)

    def write(self) -> None:
        with self.write_lock:
            self._write()

    def _write(self) -> None:
        with self.lock:
            counts, self.counts = self.counts, {}
            sockets, written = self.sockets, self.sockets_written
        now = time.monotonic()
        sockets_due = written is None or written[0] != sockets or now - written[1] >= LIVE_SOCKETS_REFRESH_SECONDS
        if not counts and not sockets_due:
            return
        pipe = ops_redis().pipeline(transaction=False)
        for name, value in counts.items():
            pipe.hincrby(LIVE_METRICS_KEY, name, value)
        if sockets_due:
            pipe.set(live_sockets_key(), sockets, ex=LIVE_SOCKETS_TTL_SECONDS)
        try:
            pipe.execute()
        except Exception:
            with self.lock:  # counted again at the next write
                for name, value in counts.items():
                    self.counts[name] = self.counts.get(name, 0) + value
            raise
        if sockets_due:
            with self.lock:
                self.sockets_written = (sockets, now)


def live_sockets_key() -> str:
    return f"{LIVE_SOCKETS_KEY_PREFIX}{socket.gethostname()}:{os.getpid()}"


_live_metrics = _LiveMetrics()


def _live_metrics_after_fork() -> None:
    global _live_metrics
    _live_metrics = _LiveMetrics()  # the parent's counts are the parent's to write


os.register_at_fork(after_in_child=_live_metrics_after_fork)


def live_count(outcome: str, amount: int = 1) -> None:
    """Counts live messages (emailsys_live_messages_total{outcome}); cheap, never raises, never waits for Redis."""
    assert outcome in LIVE_OUTCOMES, outcome
    _live_metrics.count(outcome, amount)


def live_sockets_change(delta: int) -> None:
    """A live socket of this process opened (+1) or closed (-1): emailsys_live_sockets_open."""
    _live_metrics.sockets_change(delta)


def live_metrics_write() -> None:
    """Writes this process's live metrics now (tests; the thread does it within a second anyway)."""
    _live_metrics.write()


@signals.task_prerun.connect
def _on_task_prerun(task_id: str | None = None, **_kwargs) -> None:
    if task_id:
        _started_at[task_id] = time.monotonic()


@signals.task_postrun.connect
def _on_task_postrun(task_id: str | None = None, task=None, state: str | None = None, **_kwargs) -> None:
    started = _started_at.pop(task_id, None) if task_id else None
    runtime = time.monotonic() - started if started is not None else None
    task_record_finished(task_name=getattr(task, "name", "unknown"), state=state or "UNKNOWN", runtime_seconds=runtime)


def queue_depths(conn: Connection | None = None, *, queues: Sequence[str] = ()) -> dict[str, int]:
    """Messages waiting in each queue of each pool, or in `queues` (ready, not yet delivered to a worker).
    `conn`: a broker connection the caller keeps open (a frequent caller); otherwise one is opened here."""
    if conn is None:
        with ops_broker_connection() as own:
            return queue_depths(own, queues=queues)
    depths: dict[str, int] = {}
    # One channel for every queue: on Redis each channel is a connection of its own.
    channel = conn.channel()
    try:
        for queue in queues or [name for names in settings.WORKER_POOL_QUEUES.values() for name in names]:
            try:
                depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
            except conn.channel_errors:  # the queue was never declared: nothing waits in it
                depths[queue] = 0
                if not getattr(channel, "is_open", True):  # AMQP closes a channel on a failed passive declare
                    channel = conn.channel()
    finally:
        channel.close()
    return depths


class CeleryCollector(Collector):
    def describe(self) -> list:
        """Names only: without it, registering would call collect() and touch Redis and the broker at start."""
        return [
            CounterMetricFamily("emailsys_celery_tasks", "", labels=["task", "state"]),
            HistogramMetricFamily("emailsys_celery_task_runtime_seconds", "", labels=["task"]),
            GaugeMetricFamily("emailsys_celery_queue_depth", "", labels=["queue"]),
            CounterMetricFamily("emailsys_events", "", labels=["event"]),
            CounterMetricFamily("emailsys_live_messages", "", labels=["outcome"]),
            GaugeMetricFamily("emailsys_live_sockets_open", ""),
        ]

    def collect(self) -> Iterator:
        yield from self._task_metrics()
        yield self._event_metrics()
        yield from self._live_metrics()
        depth = GaugeMetricFamily("emailsys_celery_queue_depth", "Messages waiting in each queue.", labels=["queue"])
        try:
            for queue, count in queue_depths().items():
                depth.add_metric([queue], count)
        except Exception as error:  # noqa: BLE001
            logger.warning("could not read queue depths: %s", type(error).__name__)
        yield depth

    def _task_metrics(self) -> Iterator:
        tasks = CounterMetricFamily(
            "emailsys_celery_tasks", "Finished Celery tasks by task and final state.", labels=["task", "state"]
        )
        runtime = HistogramMetricFamily(
            "emailsys_celery_task_runtime_seconds", "Celery task run time, per task.", labels=["task"]
        )
        try:
            raw = ops_redis().hgetall(TASK_METRICS_KEY)
        except Exception as error:  # noqa: BLE001
            logger.warning("could not read task metrics: %s", type(error).__name__)
            raw = {}
        fields = {key.decode(): value.decode() for key, value in raw.items()}
        for key, value in fields.items():
            task_name, kind, *rest = key.split(_SEP)
            if kind == "state":
                tasks.add_metric([task_name, rest[0]], float(value))
        histogram_add(runtime, fields, RUNTIME_BUCKETS)
        yield tasks
        yield runtime

    def _event_metrics(self) -> CounterMetricFamily:
        events = CounterMetricFamily("emailsys_events", "Counted events: " + "; ".join(
            f"{name}: {meaning}" for name, meaning in EVENTS.items()), labels=["event"])  # fmt: skip
        try:
            raw = {key.decode(): int(value) for key, value in ops_redis().hgetall(EVENT_METRICS_KEY).items()}
        except Exception as error:  # noqa: BLE001
            logger.warning("could not read event metrics: %s", type(error).__name__)
            raw = {}
        for name in EVENTS:
            events.add_metric([name], float(raw.get(name, 0)))
        return events

    def _live_metrics(self) -> Iterator:
        messages = CounterMetricFamily("emailsys_live_messages", "Live snapshots by outcome: " + "; ".join(
            f"{name}: {meaning}" for name, meaning in LIVE_OUTCOMES.items()), labels=["outcome"])  # fmt: skip
        sockets = GaugeMetricFamily("emailsys_live_sockets_open", "Open live WebSockets, summed over the processes.")
        try:
            redis = ops_redis()
            raw = {key.decode(): int(value) for key, value in redis.hgetall(LIVE_METRICS_KEY).items()}
            keys = list(redis.scan_iter(match=f"{LIVE_SOCKETS_KEY_PREFIX}*", count=1000))
            open_sockets = sum(int(value) for value in redis.mget(keys) if value is not None) if keys else 0
        except Exception as error:  # noqa: BLE001
            logger.warning("could not read live metrics: %s", type(error).__name__)
            return
        for name in LIVE_OUTCOMES:
            messages.add_metric([name], float(raw.get(name, 0)))
        sockets.add_metric([], float(open_sockets))
        yield messages
        yield sockets


_collector: CeleryCollector | None = None


def register_collector() -> None:
    global _collector
    if _collector is None:
        _collector = CeleryCollector()
        REGISTRY.register(_collector)
