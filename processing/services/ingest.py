"""Storing provider messages: each once per (mailbox, provider message id), with its raw MIME and parsed
columns; a new row is queued for classification after commit."""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from emailsys.celery import app as celery_app
from emailsys.db import rows_insert_new
from emailsys.eventbus import event_emit
from processing.models import InboundEmail, Mailbox
from processing.parsing import ParsedEmail, email_parse
from processing.providers import ProviderMessage

logger = logging.getLogger(__name__)

STALLED_REQUEUE_LIMIT = 1000  # per run of the periodic task; the next run takes the rest
# The tasks behind a classification made at once by the storing process: they run this much later, for what it left.
SAFETY_NET_SECONDS = 10
QUEUE_FOR_SOURCE = {InboundEmail.Source.WEBHOOK: "inbound", InboundEmail.Source.BACKFILL: "inbound_backfill"}


def email_store(*, mailbox: Mailbox, message: ProviderMessage, source: str) -> InboundEmail | None:
    """The new row, or None when the message was stored before (nothing else happens then); see emails_store."""
    stored = emails_store(mailbox=mailbox, messages=[message], source=source)
    return stored[0] if stored else None


def emails_store(*, mailbox: Mailbox, messages: list[ProviderMessage], source: str) -> list[InboundEmail]:
    """Stores the messages in one statement; the rows that were new (a message stored before is skipped). After
    commit the new rows are enqueued for classification, PROCESSOR_BATCH_SIZE per task (source "webhook": queue
    inbound; "backfill": inbound_backfill), `events.emails_queued` and `inbound_count("received")` run. With
    ARCHIVE_ENABLED, an "archive" outbox event per new row in the same transaction puts the message on the archive
    queue after commit (archive.services.publish). A row whose enqueue is lost (the process died right after the
    commit) is enqueued again by `emails_requeue_stalled`."""
    return [row for row, _ in _emails_store(mailbox=mailbox, messages=messages, source=source, countdown=None)]


def emails_store_to_classify(
    *, mailbox: Mailbox, messages: list[ProviderMessage], source: str
) -> list[tuple[InboundEmail, ParsedEmail]]:
    """As `emails_store`, for a caller that classifies the new rows itself right after its commit, from the parsed
    form returned with each (classify.emails_classify_stored: no task, no second read, no second parse). Their tasks
    are still enqueued, due SAFETY_NET_SECONDS later and only for rows nobody attempted by then: they classify what
    that caller could not (it died first)."""
    return _emails_store(mailbox=mailbox, messages=messages, source=source, countdown=SAFETY_NET_SECONDS)


def _emails_store(
    *, mailbox: Mailbox, messages: list[ProviderMessage], source: str, countdown: float | None
) -> list[tuple[InboundEmail, ParsedEmail]]:
    from processing.metrics import inbound_count

    parsed = {message.email_id: email_parse(message.raw) for message in messages}
    rows = [_row(mailbox=mailbox, message=message, parsed=parsed[message.email_id], source=source)
            for message in messages]  # fmt: skip
    new = rows_insert_new(InboundEmail, rows, unique=("mailbox", "email_id"))
    if len(new) < len(rows):
        inbound_count("duplicate", amount=len(rows) - len(new))
    if not new:
        return []
    queue = QUEUE_FOR_SOURCE.get(source, "inbound_backfill")
    transaction.on_commit(lambda: emails_enqueue(new, queue=queue, countdown=countdown))
    if settings.ARCHIVE_ENABLED:  # published to the archive queue after commit, through the outbox
        for row in new:
            event_emit(stream="archive", key=f"email:{row.pk}", kind="email_stored", payload={"email_pk": row.pk})
    return [(row, parsed[row.email_id]) for row in new]


def emails_enqueue(rows: list[InboundEmail], *, queue: str, countdown: float | None = None) -> None:
    """Classification tasks for stored rows, a batch of PROCESSOR_BATCH_SIZE per task: a burst of messages costs
    the broker, the worker's task handling and the live feed one round each per batch, not per message. With a
    `countdown` the tasks are a safety net (emails_store_to_classify): due then, they skip every row attempted
    meanwhile."""
    from processing.metrics import inbound_count
    from processing.services import events

    size = max(1, settings.PROCESSOR_BATCH_SIZE)
    kwargs: dict = {} if countdown is None else {"countdown": countdown}
    for first in range(0, len(rows), size):
        # No result: nobody waits for one, and a result subscription cost the sender a Redis round trip per task.
        task_kwargs: dict = {"email_pks": [row.pk for row in rows[first : first + size]]}
        if countdown is not None:
            task_kwargs["unattempted_only"] = True
        celery_app.send_task("processing.classify_emails", kwargs=task_kwargs, queue=queue, ignore_result=True,
                             **kwargs)  # fmt: skip
    events.emails_queued(rows)
    inbound_count("received", amount=len(rows))


def emails_requeue_stalled(*, older_than_seconds: int) -> int:
    """Enqueues again (backfill queue) every message still queued after `older_than_seconds` without a result: its
    task was lost (the process that stored it died before enqueuing, or the broker lost it). Classification is
    exactly once whatever the duplicates (the result's unique key), so a message enqueued twice costs nothing."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    stalled = list(
        InboundEmail.objects.filter(status=InboundEmail.Status.QUEUED, result__isnull=True, created_at__lt=cutoff)
        .order_by("pk")[:STALLED_REQUEUE_LIMIT]
    )  # fmt: skip
    if stalled:
        logger.warning("%d stored messages had no classification task after %ss: enqueued again", len(stalled),
                       older_than_seconds)  # fmt: skip
        emails_enqueue(stalled, queue="inbound_backfill")
    return len(stalled)


def _row(*, mailbox: Mailbox, message: ProviderMessage, parsed: ParsedEmail, source: str) -> InboundEmail:
    row = InboundEmail(
        mailbox=mailbox,
        email_id=message.email_id,
        history_id=message.history_id,
        raw=message.raw,
        message_id=parsed.message_id,
        in_reply_to=parsed.in_reply_to,
        references=" ".join(parsed.references),
        sender=parsed.sender,
        sender_name=parsed.sender_name,
        recipients=parsed.recipients,
        subject=parsed.subject,
        sent_at=parsed.sent_at,
        received_at=message.internal_date,
        size_bytes=len(message.raw),
        parse_error="\n".join(parsed.errors),
        source=source if source in QUEUE_FOR_SOURCE else InboundEmail.Source.BACKFILL,
        status=InboundEmail.Status.QUEUED,
    )
    for field in InboundEmail._meta.concrete_fields:  # mail is whatever someone sent: cut to the columns
        value = getattr(row, field.attname)
        if field.max_length and isinstance(value, str) and len(value) > field.max_length and field.name != "email_id":
            setattr(row, field.attname, value[: field.max_length])
    # PostgreSQL text cannot hold NUL; a header with one is still in the raw bytes.
    for name in ("message_id", "in_reply_to", "references", "sender", "sender_name", "subject", "parse_error"):
        setattr(row, name, getattr(row, name).replace("\x00", ""))
    row.recipients = [address.replace("\x00", "") for address in row.recipients]
    return row
