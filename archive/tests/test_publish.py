"""Inbound mail onto the archive queue through the outbox: email_store emits an "archive" event in its
transaction; a real Celery worker of the default pool runs the handler, which sends the seed's message."""

import json
from datetime import UTC, datetime

import pytest
from django.db import transaction

from archive.services import ArchiverControl, archive_run, archive_storage
from emailsys.models import OutboxEvent, ReceivedEvent
from emailsys.sqs import sqs_client
from emailsys.testing import wait_until, worker_argv
from processing.models import Mailbox
from processing.providers import ProviderMessage
from processing.services.ingest import email_store

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]
RAW = (
    b"From: Ann Example <Ann.Example@example.org>\r\nTo: inbox@example.com\r\nSubject: Can we talk?\r\n"
    b"Date: Tue, 10 Dec 2024 14:30:22 +0000\r\nMessage-ID: <talk-1@example.org>\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nTuesday works for me.\r\n"
)


def receive_all(url: str) -> list[dict]:
    messages = []
    for _ in range(3):  # SQS may answer a receive with part of what it holds
        messages += sqs_client().receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return messages


def test_a_stored_email_reaches_the_archive_queue_once_even_when_stored_twice(
    archive_setup, settings, processes
) -> None:
    settings.ARCHIVE_ENABLED = True
    processes("worker-default", worker_argv("default", node_name="archive-default@%h"), env=archive_setup.env())
    mailbox = Mailbox.objects.create(address="inbox@example.com")
    message = ProviderMessage("provider-1", 1, RAW, datetime(2024, 12, 10, 14, 31, tzinfo=UTC))
    with transaction.atomic():
        row = email_store(mailbox=mailbox, message=message, source="webhook")
    with transaction.atomic():
        assert email_store(mailbox=mailbox, message=message, source="backfill") is None

    assert list(OutboxEvent.objects.values_list("stream", "kind", "payload")) == [
        ("archive", "email_stored", {"email_pk": row.pk})
    ]
    wait_until(lambda: ReceivedEvent.objects.filter(state="done").exists(), timeout=60, what="archive event run")
    [queued] = wait_until(lambda: receive_all(archive_setup.queue_url), timeout=10, what="message on the queue")
    assert receive_all(archive_setup.queue_url) == [], "one message for the email"
    assert json.loads(queued["Body"]) == {
        "message_id": f"inbound-{row.pk}",
        "email_data": {"email_subject": "Can we talk?", "email_sender": "ann.example@example.org",
                       "email_timestream": "1733841022", "email_content": "Tuesday works for me."},
        "metadata": {"processor_version": "1.0.0", "source": "mailbox:inbox@example.com"},
    }  # fmt: skip

    sqs_client().change_message_visibility(
        QueueUrl=archive_setup.queue_url, ReceiptHandle=queued["ReceiptHandle"], VisibilityTimeout=0
    )
    archive_run(queue_url=archive_setup.queue_url, storage=archive_storage(), control=ArchiverControl(), once=True)
    assert archive_setup.keys() == [f"emails/2024/12/10/ann.example/inbound-{row.pk}_143022.json"]


def test_nothing_is_published_while_archiving_is_off(settings) -> None:
    settings.ARCHIVE_ENABLED = False
    mailbox = Mailbox.objects.create(address="inbox@example.com")
    message = ProviderMessage("provider-2", 1, RAW, datetime(2024, 12, 10, 14, 31, tzinfo=UTC))
    assert email_store(mailbox=mailbox, message=message, source="webhook") is not None
    assert not OutboxEvent.objects.filter(stream="archive").exists()
