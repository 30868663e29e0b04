"""Live events of inbound mail (the seed's `email_event` messages on WS /ws/emails/{client_id}, the dashboard's
inbound panel). Called by the pipeline after commit; never raises (a live outage must not fail classification).

Events go out at once on the process's live loop (emailsys.live.live_publish_groups) to the channel-layer group
EMAIL_EVENTS_GROUP. Stats updates are coalesced: a mark wakes this process's stats thread, which publishes
STATS_INTERVAL_SECONDS later, and a Redis gate lets one process per interval publish (a process refused by the gate
tries again one interval later, so the last change is always published): at most ~2 per second across every worker.
"""

import logging
import os
import threading
import time

from django.db import connection
from django.utils import timezone
from kombu import Connection

from processing.models import EmailResult, InboundEmail

logger = logging.getLogger(__name__)

EMAIL_EVENTS_GROUP = "inbound-emails"
STATS_INTERVAL_SECONDS = 0.5
STATS_GATE_KEY = "emailsys:live:gate:inbound-stats"


def _event(event: str, data: dict) -> dict:
    return {"type": "email_event", "event": event, "data": data, "timestamp": timezone.now().isoformat()}


def _publish(messages: list[dict]) -> None:
    """One channel-layer message for a batch: the consumer writes each as a frame of its own."""
    from emailsys.live import live_publish_groups

    live_publish_groups(groups=[EMAIL_EVENTS_GROUP], payload=messages)


def email_queued(email: InboundEmail) -> None:
    emails_queued([email])


def emails_queued(emails: list[InboundEmail]) -> None:
    """Messages were stored and wait for classification (`event: "queue"`, one per message)."""
    try:
        _publish([_event("queue", {
            "email_id": email.email_id,
            "mailbox": email.mailbox.address,
            "subject": email.subject,
            "sender": email.sender,
            "received_at": email.received_at.isoformat(),
            "status": email.status,
        }) for email in emails])  # fmt: skip
        _stats.mark()
    except Exception:
        logger.exception("live queue events for %s failed", [getattr(email, "email_id", "?") for email in emails])


def email_processed(email: InboundEmail, result: EmailResult) -> None:
    emails_processed([(email, result)])


def emails_processed(done: list[tuple[InboundEmail, EmailResult]]) -> None:
    """Messages got their results (`event: "process"`, one per message, with the result); also a stats update."""
    try:
        _publish([_event("process", {
            "email_id": email.email_id,
            "mailbox": email.mailbox.address,
            "subject": email.subject,
            "sender": email.sender,
            "classification": result.classification,
            "confidence": result.confidence,
            "processed_at": result.processed_at.isoformat(),
            "processor_id": result.processor_id,
            "processing_time_ms": result.processing_time_ms,
        }) for email, result in done])  # fmt: skip
        _stats.mark()
        from emailsys.dashboard import DASHBOARD
        from emailsys.live import SINGLETON_ID, live_progress

        live_progress(DASHBOARD, SINGLETON_ID)  # after commit (now, when called after it), coalesced
    except Exception:
        logger.exception("live process events for %s failed", [getattr(email, "email_id", "?") for email, _ in done])


def stats_message(broker: Connection | None = None) -> dict:
    from processing.selectors import inbound_counts, inbound_queue_depths

    return {"type": "stats_update", "data": {**inbound_counts(), "queue_depth": inbound_queue_depths(broker)},
            "timestamp": timezone.now().isoformat()}  # fmt: skip


class _StatsCoalescer:
    """Marks only wake one publishing thread per process, which keeps its broker connection (a thread per update,
    refused by the gate most times, opened a broker and a database connection anew at each try)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None

    def mark(self) -> None:
        self.wake.set()
        if self.thread is None:
            with self.lock:
                if self.thread is None:
                    self.thread = threading.Thread(target=self._run, name="inbound-stats", daemon=True)
                    self.thread.start()

    def _run(self) -> None:
        from emailsys.ops_clients import ops_broker_connection

        broker = None
        while True:
            self.wake.wait()
            time.sleep(STATS_INTERVAL_SECONDS)  # the marks of one interval make one update
            while not _gate_pass():  # another process published this interval: ours comes next
                time.sleep(STATS_INTERVAL_SECONDS)
            self.wake.clear()  # a mark from now on makes another update
            try:
                broker = broker or ops_broker_connection()
                _publish([stats_message(broker)])
            except Exception:
                logger.exception("live stats update failed")
                if broker is not None:
                    broker.release()
                broker = None  # a new one with the next update
            finally:
                connection.close()  # the database's only between updates (a test database can then be dropped)


def _gate_pass() -> bool:
    from emailsys.ops_clients import ops_redis

    try:
        return bool(ops_redis().set(STATS_GATE_KEY, "1", nx=True, px=int(STATS_INTERVAL_SECONDS * 1000)))
    except Exception:  # noqa: BLE001 - without Redis there is no channel layer either; try anyway
        return True


_stats = _StatsCoalescer()


def _after_fork_in_child() -> None:
    global _stats
    _stats = _StatsCoalescer()


os.register_at_fork(after_in_child=_after_fork_in_child)
