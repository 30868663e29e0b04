"""Live events of inbound mail (the seed's `email_event` messages on WS /ws/emails/{client_id}, the dashboard's
inbound panel). Called by the pipeline after commit; never raises (a live outage must not fail classification).

CONTRACT (owned by the api/live helper; signatures fixed):

Events go out at once on the process's live loop (emailsys.live.live_publish_groups) to the channel-layer group
EMAIL_EVENTS_GROUP. Stats updates are coalesced: a mark starts a timer of STATS_INTERVAL_SECONDS in this process,
and a Redis gate lets one process per interval publish (a process refused by the gate tries again one interval
later, so the last change is always published): at most ~2 per second across every worker.
"""

import logging
import os
import threading

from django.db import connection
from django.utils import timezone

from processing.models import EmailResult, InboundEmail

logger = logging.getLogger(__name__)

EMAIL_EVENTS_GROUP = "inbound-emails"
STATS_INTERVAL_SECONDS = 0.5
STATS_GATE_KEY = "emailsys:live:gate:inbound-stats"


def _event(event: str, data: dict) -> dict:
    return {"type": "email_event", "event": event, "data": data, "timestamp": timezone.now().isoformat()}


def _publish(message: dict) -> None:
    from emailsys.live import live_publish_groups

    live_publish_groups(groups=[EMAIL_EVENTS_GROUP], payload=message)


def email_queued(email: InboundEmail) -> None:
    """A message was stored and waits for classification (`event: "queue"`)."""
    try:
        data = {
            "email_id": email.email_id,
            "mailbox": email.mailbox.address,
            "subject": email.subject,
            "sender": email.sender,
            "received_at": email.received_at.isoformat(),
            "status": email.status,
        }
        _publish(_event("queue", data))
        _stats.mark()
    except Exception:
        logger.exception("live queue event for %s failed", getattr(email, "email_id", "?"))


def email_processed(email: InboundEmail, result: EmailResult) -> None:
    """A message got its result (`event: "process"`, with the result); also a stats update."""
    try:
        data = {
            "email_id": email.email_id,
            "mailbox": email.mailbox.address,
            "subject": email.subject,
            "sender": email.sender,
            "classification": result.classification,
            "confidence": result.confidence,
            "processed_at": result.processed_at.isoformat(),
            "processor_id": result.processor_id,
            "processing_time_ms": result.processing_time_ms,
        }
        _publish(_event("process", data))
        _stats.mark()
        from emailsys.dashboard import DASHBOARD
        from emailsys.live import SINGLETON_ID, live_progress

        live_progress(DASHBOARD, SINGLETON_ID)  # after commit (now, when called after it), coalesced
    except Exception:
        logger.exception("live process event for %s failed", getattr(email, "email_id", "?"))


def stats_message() -> dict:
    from processing.selectors import inbound_counts, inbound_queue_depths

    return {"type": "stats_update", "data": {**inbound_counts(), "queue_depth": inbound_queue_depths()},
            "timestamp": timezone.now().isoformat()}  # fmt: skip


class _StatsCoalescer:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending = False

    def mark(self) -> None:
        with self.lock:
            if self.pending:
                return
            self.pending = True
        self._later()

    def _later(self) -> None:
        timer = threading.Timer(STATS_INTERVAL_SECONDS, self._fire)
        timer.daemon = True
        timer.start()

    def _fire(self) -> None:
        try:
            if not _gate_pass():
                self._later()  # another process published this interval: ours comes next
                return
            with self.lock:
                self.pending = False
            _publish(stats_message())
        except Exception:
            logger.exception("live stats update failed")
        finally:
            connection.close()  # the timer thread's own connection


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
