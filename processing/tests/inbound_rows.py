"""Inbound rows for the api helper's tests, made directly (the pipeline is tested elsewhere)."""

from datetime import datetime, timedelta

from django.utils import timezone

from processing.models import EmailResult, InboundEmail, Mailbox

_counter = iter(range(1, 1_000_000))


def mailbox_make(address: str = "inbox@example.com") -> Mailbox:
    return Mailbox.objects.get_or_create(address=address)[0]


def raw_message(*, sender: str, subject: str, body: str) -> bytes:
    return (
        f"From: Ann Example <{sender}>\r\nTo: inbox@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <m{next(_counter)}@example.com>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


def email_make(
    *,
    email_id: str | None = None,
    mailbox: Mailbox | None = None,
    sender: str = "ann@example.org",
    subject: str = "Hello",
    body: str = "Can we meet on Tuesday?",
    received_at: datetime | None = None,
    status: str = InboundEmail.Status.QUEUED,
) -> InboundEmail:
    number = next(_counter)
    raw = raw_message(sender=sender, subject=subject, body=body)
    return InboundEmail.objects.create(
        mailbox=mailbox or mailbox_make(),
        email_id=email_id or f"email-{number}",
        history_id=number,
        raw=raw,
        sender=sender,
        sender_name="Ann Example",
        subject=subject,
        received_at=received_at or timezone.now(),
        size_bytes=len(raw),
        status=status,
    )


def result_make(
    email: InboundEmail, *, classification: str = "meeting", confidence: float = 0.9, ms: float = 3.0
) -> EmailResult:
    InboundEmail.objects.filter(pk=email.pk).update(status=InboundEmail.Status.CLASSIFIED)
    return EmailResult.objects.create(
        email=email,
        classification=classification,
        confidence=confidence,
        processor_id="test-node/default@1",
        model_version="1",
        processing_time_ms=ms,
        processed_at=timezone.now() - timedelta(seconds=1),
        signals={"rule": "text/calendar METHOD=REQUEST"},
    )
