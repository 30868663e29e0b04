"""Inbound messages onto the archive queue. processing's email_store emits an "archive" event in the transaction
that stores a new message (when ARCHIVE_ENABLED); the event bus runs `archive_email_publish` after commit, at
least once, and the message's deterministic key absorbs a repeated send."""

import logging
from datetime import UTC

from archive.services.messages import ArchiveMessage, archive_message_body
from archive.services.queue import archive_message_send

logger = logging.getLogger(__name__)


def archive_message_from_email(email) -> ArchiveMessage:
    """The seed's message for a stored InboundEmail: its text body, its Date (else the provider's internal date)
    as seconds since the epoch, source "mailbox:<address>", message id "inbound-<row id>" (unique per stored row,
    the same on every send)."""
    from processing.parsing import email_parse

    sent_at = (email.sent_at or email.received_at).astimezone(UTC)
    return ArchiveMessage(
        message_id=f"inbound-{email.pk}",
        email_subject=email.subject,
        email_sender=email.sender,
        email_timestream=str(int(sent_at.timestamp())),
        email_content=email_parse(bytes(email.raw)).text,
        source=f"mailbox:{email.mailbox.address}",
        sent_at=sent_at.replace(microsecond=0),
    )


def archive_email_publish(*, event) -> None:
    """The "archive" stream's handler (settings.EVENT_HANDLERS): sends the stored email's message to the archive
    queue. An email deleted since is skipped; an SQS error fails the event (recorded by the bus)."""
    from processing.models import InboundEmail

    email = InboundEmail.objects.select_related("mailbox").filter(pk=event.payload.get("email_pk")).first()
    if email is None:
        logger.warning("archive event %s: inbound email %s is gone; nothing to archive", event.id,
                       event.payload.get("email_pk"))  # fmt: skip
        return
    message_id = archive_message_send(body=archive_message_body(archive_message_from_email(email)))
    logger.info("archive event %s: inbound email %s queued as SQS message %s", event.id, email.pk, message_id)
