"""Thin Celery tasks of the inbound pool (routed by name: processing.* → inbound; callers pick inbound_backfill
for backfill work). The services do the work and are idempotent."""

from celery import shared_task

from processing.services import sync


@shared_task(name="processing.sync_mailbox", acks_late=True)
def sync_mailbox(*, mailbox_id: int, source: str) -> None:
    sync.mailbox_sync(mailbox_id=mailbox_id, source=source)
