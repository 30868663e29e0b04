"""Thin Celery tasks of the inbound pool (routed by name: processing.* → inbound; callers pick inbound_backfill
for backfill work). The services do the work and are idempotent."""

import random

from celery import shared_task, signals
from django.conf import settings

from processing.classifier import classifier_get
from processing.services import classify, imap, sync


@signals.worker_init.connect
def _classifier_preload(sender, **kwargs) -> None:
    """An inbound worker loads the model before its pool forks: every child has it from the start (a child is
    replaced every CELERY_WORKER_MAX_TASKS_PER_CHILD tasks), where loading it in a child's first task delayed that
    batch and the messages behind it by the import of numpy and the model."""
    queues = sender.app.amqp.queues.consume_from or {}
    if any(name.startswith("inbound") for name in queues):
        classifier_get()


@shared_task(
    name="processing.sync_mailbox",
    acks_late=True,
    ignore_result=True,
    autoretry_for=(Exception,),  # ProviderError mostly; a failing entry too (counted: poison after 3 runs)
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=6,
)
def sync_mailbox(*, mailbox_id: int, source: str) -> None:
    sync.mailbox_sync(mailbox_id=mailbox_id, source=source)


@shared_task(name="processing.classify_email", bind=True, acks_late=True, ignore_result=True)
def classify_email(self, email_pk: int) -> None:
    """PROCESSOR_MAX_RETRIES retries after the first failure, PROCESSOR_RETRY_DELAY_MS doubling (+ up to 25 %
    jitter); after the last the message is marked failed."""
    try:
        classify.email_classify(email_pk=email_pk)
    except Exception as error:
        retries = self.request.retries
        if retries >= settings.PROCESSOR_MAX_RETRIES:
            classify.email_fail(email_pk=email_pk, error=f"{type(error).__name__}: {error}")
            return
        delay = settings.PROCESSOR_RETRY_DELAY_MS / 1000 * 2**retries
        raise self.retry(
            exc=error, countdown=delay * (1 + random.random() / 4), max_retries=settings.PROCESSOR_MAX_RETRIES
        ) from error


@shared_task(name="processing.classify_emails", bind=True, acks_late=True, ignore_result=True)
def classify_emails(self, *, email_pks: list[int], unattempted_only: bool = False) -> None:
    """A batch (ingest.emails_enqueue); a message whose classifier raised goes on alone in `classify_email`, as
    its first retry (same backoff, same PROCESSOR_MAX_RETRIES in all)."""
    failed = classify.emails_classify(email_pks=email_pks, unattempted_only=unattempted_only)
    queue = (self.request.delivery_info or {}).get("routing_key") or "inbound"
    classify.classification_failures_handle(failed, queue=queue)


@shared_task(name="processing.fallback_sync", acks_late=True)
def fallback_sync() -> int:
    return sync.fallback_sync_request()


@shared_task(name="processing.imap_poll", acks_late=True)
def imap_poll(*, mailbox_id: int) -> str:
    """No retries: the poll records its own failures on the mailbox, and beat polls again within
    IMAP_POLL_INTERVAL (or IDLE wakes it sooner)."""
    return imap.imap_poll(mailbox_id).outcome


@shared_task(name="processing.imap_poll_all", acks_late=True)
def imap_poll_all() -> int:
    return imap.imap_poll_all_request()
