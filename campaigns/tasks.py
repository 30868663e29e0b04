"""Thin Celery entry points: ids in, one service call. Routing: `campaigns.send_*` runs on the sending pool."""

from celery import shared_task
from django.db import transaction

from campaigns.services.dispatch import dispatch_due
from campaigns.services.sending import SmtpSessions, lead_process, send_record_resend
from emailsys import clock


@shared_task(name="campaigns.dispatch_due", ignore_result=True)
def dispatch_due_task() -> int:
    """Ticked by beat (periodic task "campaigns: dispatch"). Enqueues each batch after the claim committed."""
    result = dispatch_due(now=clock.now())
    for batch in result.batches:
        transaction.on_commit(lambda batch=batch: send_batch.delay(batch))
    return result.lead_count


@shared_task(name="campaigns.send_batch", ignore_result=True)
def send_batch(lead_ids: list[int], account_filter: int | None = None) -> dict[str, int]:
    """Processes each lead once over SMTP connections shared by the batch. Safe to run twice (acks_late)."""
    sessions = SmtpSessions()
    outcomes: dict[str, int] = {}
    try:
        for lead_id in lead_ids:
            outcome = lead_process(lead_id=lead_id, sessions=sessions, account_filter=account_filter)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    finally:
        sessions.close()
    return outcomes


@shared_task(name="campaigns.send_resend", ignore_result=True)
def send_resend(record_id: int) -> str:
    """An operator's "resend anyway" of an unknown send."""
    sessions = SmtpSessions()
    try:
        return send_record_resend(record_id=record_id, sessions=sessions)
    finally:
        sessions.close()
