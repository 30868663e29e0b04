"""Thin Celery entry points: ids in, one service call. Routing: `campaigns.send_*` runs on the sending pool."""

import logging
import threading

from celery import shared_task
from django.conf import settings
from django.db import transaction

from campaigns.services.batches import lead_batch_send, outcome_counts
from campaigns.services.dispatch import dispatch_due
from campaigns.services.sends import send_record_resend
from campaigns.services.smtp import SmtpSessions
from emailsys import clock

logger = logging.getLogger(__name__)


MAX_SCANS_PER_TICK = 10


@shared_task(name="campaigns.dispatch_due", ignore_result=True)
def dispatch_due_task() -> int:
    """Ticked by beat (periodic task "campaigns: dispatch"). Enqueues each batch after the claim committed. A
    full scan is followed by another at once: a backlog reaches the workers in one tick, not one scan a tick."""
    dispatched = 0
    for _ in range(MAX_SCANS_PER_TICK):
        result = dispatch_due(now=clock.now())
        for batch in result.batches:
            transaction.on_commit(lambda batch=batch: send_batch.delay(batch.lead_ids, claim=batch.claim))
        dispatched += result.lead_count
        if result.lead_count < settings.CAMPAIGN_DISPATCH_SCAN_LIMIT:
            break
    return dispatched


_thread = threading.local()
SMTP_IDLE_SECONDS = 60


def _thread_sessions() -> SmtpSessions:
    """SMTP connections live per worker thread across batches: a new one costs TCP + EHLO + TLS + AUTH."""
    if not hasattr(_thread, "sessions"):
        _thread.sessions = SmtpSessions()
    return _thread.sessions


@shared_task(name="campaigns.send_batch", ignore_result=True)
def send_batch(lead_ids: list[int], account_filter: int | None = None, claim: str | None = None) -> dict[str, int]:
    """Sends the batch of leads the dispatcher claimed with `claim`. A copy whose claim is no longer current
    (redelivered, published twice, or outlived by its lease) does nothing. An unexpected error is logged; the
    batch's leads are due again when their claim lease passes, and their claimed sends are recovered then."""
    sessions = _thread_sessions()
    try:
        per_lead = lead_batch_send(lead_ids=lead_ids, sessions=sessions, account_filter=account_filter, claim=claim)
        counts = dict(outcome_counts(per_lead))
        if counts:  # one line per batch that did something (a stale copy did nothing: its own line says so)
            logger.info(
                "send batch of %s lead(s): %s",
                len(lead_ids),
                ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
                extra={"event": "batch_sent", "leads": len(lead_ids), "outcomes": counts},
            )
        return counts
    except Exception:
        logger.exception("batch of %s leads failed unexpectedly; they are retried after their lease", len(lead_ids))
        return {"error": len(lead_ids)}
    finally:
        sessions.close_idle(max_idle_seconds=SMTP_IDLE_SECONDS)


@shared_task(name="campaigns.send_resend", ignore_result=True)
def send_resend(record_id: int) -> str:
    """An operator's "resend anyway" of an unknown send."""
    sessions = SmtpSessions()
    try:
        return send_record_resend(record_id=record_id, sessions=sessions)
    finally:
        sessions.close()
