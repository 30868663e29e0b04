"""Thin Celery entry points: ids in, one service call. Routing: `campaigns.send_*` runs on the sending pool."""

import logging
import threading

from celery import shared_task
from django.db import transaction

from campaigns.services.dispatch import dispatch_due
from campaigns.services.sending import SmtpSessions, lead_process, send_record_resend
from emailsys import clock

logger = logging.getLogger(__name__)


@shared_task(name="campaigns.dispatch_due", ignore_result=True)
def dispatch_due_task() -> int:
    """Ticked by beat (periodic task "campaigns: dispatch"). Enqueues each batch after the claim committed."""
    result = dispatch_due(now=clock.now())
    for batch in result.batches:
        transaction.on_commit(lambda batch=batch: send_batch.delay(batch))
    return result.lead_count


_thread = threading.local()
SMTP_IDLE_SECONDS = 60


def _thread_sessions() -> SmtpSessions:
    """SMTP connections live per worker thread across batches: a new one costs TCP + EHLO + TLS + AUTH."""
    if not hasattr(_thread, "sessions"):
        _thread.sessions = SmtpSessions()
    return _thread.sessions


@shared_task(name="campaigns.send_batch", ignore_result=True)
def send_batch(lead_ids: list[int], account_filter: int | None = None) -> dict[str, int]:
    """Processes each lead once. Safe to run twice (acks_late). One lead's unexpected error is logged and does
    not stop the batch: that lead is due again when its claim lease passes."""
    sessions = _thread_sessions()
    outcomes: dict[str, int] = {}
    for lead_id in lead_ids:
        try:
            outcome = lead_process(lead_id=lead_id, sessions=sessions, account_filter=account_filter)
        except Exception:
            logger.exception("lead %s failed unexpectedly; it is retried after its lease", lead_id)
            outcome = "error"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    sessions.close_idle(max_idle_seconds=SMTP_IDLE_SECONDS)
    return outcomes


@shared_task(name="campaigns.send_resend", ignore_result=True)
def send_resend(record_id: int) -> str:
    """An operator's "resend anyway" of an unknown send."""
    sessions = SmtpSessions()
    try:
        return send_record_resend(record_id=record_id, sessions=sessions)
    finally:
        sessions.close()
