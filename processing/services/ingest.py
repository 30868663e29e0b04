"""Storing provider messages: each once per (mailbox, provider message id), with its raw MIME and parsed
columns; a new row is queued for classification after commit."""

import logging

from django.conf import settings
from django.db import connection, transaction

from emailsys.celery import app as celery_app
from emailsys.eventbus import event_emit
from processing.models import InboundEmail, Mailbox
from processing.parsing import ParsedEmail, email_parse
from processing.providers import ProviderMessage

logger = logging.getLogger(__name__)

QUEUE_FOR_SOURCE = {InboundEmail.Source.WEBHOOK: "inbound", InboundEmail.Source.BACKFILL: "inbound_backfill"}


def email_store(*, mailbox: Mailbox, message: ProviderMessage, source: str) -> InboundEmail | None:
    """The new row, or None when the message was stored before (nothing else happens then). After commit a new
    row is enqueued for classification (source "webhook": queue inbound; "backfill": inbound_backfill),
    `events.email_queued` and `inbound_count("received")` run. With ARCHIVE_ENABLED, an "archive" outbox event in
    the same transaction puts the message on the archive queue after commit (archive.services.publish)."""
    from processing.metrics import inbound_count

    row = _row(mailbox=mailbox, message=message, parsed=email_parse(message.raw), source=source)
    if not _insert_unless_stored(row):
        inbound_count("duplicate")
        return None
    queue = QUEUE_FOR_SOURCE.get(source, "inbound_backfill")
    transaction.on_commit(lambda: _queued(row, queue))
    if settings.ARCHIVE_ENABLED:  # published to the archive queue after commit, through the outbox
        event_emit(stream="archive", key=f"email:{row.pk}", kind="email_stored", payload={"email_pk": row.pk})
    return row


def _queued(row: InboundEmail, queue: str) -> None:
    from processing.metrics import inbound_count
    from processing.services import events

    # No result: nobody waits for one, and a result subscription cost the sender a Redis round trip per message.
    celery_app.send_task("processing.classify_email", kwargs={"email_pk": row.pk}, queue=queue, ignore_result=True)
    events.email_queued(row)
    inbound_count("received")


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


def _insert_unless_stored(row: InboundEmail) -> bool:
    """INSERT ... ON CONFLICT (mailbox, email_id) DO NOTHING RETURNING id: True (and row.pk set) when it was
    new. A concurrent store of the same message waits for ours and then inserts nothing."""
    meta = InboundEmail._meta
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    values = [field.get_db_prep_save(field.pre_save(row, add=True), connection) for field in fields]
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    table = connection.ops.quote_name(meta.db_table)
    sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) ON CONFLICT (mailbox_id, email_id) DO NOTHING"  # noqa: S608 - names from the model, values bound
    sql += " RETURNING id"
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        found = cursor.fetchone()
    if found is None:
        return False
    row.pk = found[0]
    row._state.adding = False
    return True
