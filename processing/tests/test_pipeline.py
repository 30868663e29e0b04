"""Classification as the pipeline runs it: one result per message however many runs race for it, a manual
re-classify replacing it, and, in a real inbound worker, retries with backoff ending in `failed`."""

import socket
import threading
from datetime import UTC, datetime

import pytest
from django.db import connection

from emailsys.ops_clients import ops_redis
from emailsys.testing import process_env, unique_token, wait_until, worker_argv
from processing.classifier import classifier_get
from processing.models import EmailResult, InboundEmail, Mailbox
from processing.providers import ProviderMessage
from processing.services.classify import email_classify, email_reclassify
from processing.services.ingest import email_store

RAW = b"From: Ann <ann@example.org>\r\nTo: inbox@example.com\r\nSubject: %s\r\n\r\nHello there.\r\n"


def stored_email(mailbox: Mailbox, email_id: str, subject: str = "Hi") -> InboundEmail:
    return InboundEmail.objects.create(
        mailbox=mailbox, email_id=email_id, history_id=1, raw=RAW % subject.encode(), received_at=datetime.now(tz=UTC)
    )


@pytest.mark.django_db(transaction=True)
def test_racing_classifications_of_one_message_store_one_result() -> None:
    mailbox = Mailbox.objects.create(address="race@example.com")
    email = stored_email(mailbox, "e1")
    start = threading.Barrier(6)
    won: list[EmailResult | None] = []

    def run() -> None:
        try:
            start.wait(timeout=10)
            won.append(email_classify(email_pk=email.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len([result for result in won if result is not None]) == 1 and len(won) == 6
    result = EmailResult.objects.get(email=email)
    assert result.processor_id.endswith(f"/default@{classifier_get().version}") and result.processing_time_ms >= 0
    email.refresh_from_db()
    assert email.status == "classified"
    assert email_classify(email_pk=email.pk) is None and EmailResult.objects.count() == 1


@pytest.mark.django_db
def test_reclassify_replaces_the_result() -> None:
    email = stored_email(Mailbox.objects.create(address="re@example.com"), "e2")
    first = email_classify(email_pk=email.pk)
    second = email_reclassify(email=email)
    assert EmailResult.objects.get(email=email).pk == second.pk != first.pk
    assert second.processed_at >= first.processed_at


@pytest.mark.django_db(transaction=True)
def test_a_worker_classifies_fresh_mail_and_retries_a_failing_one_until_failed(processes) -> None:
    ops_redis().flushdb()
    node = f"inbound-{unique_token()}@{socket.gethostname()}"
    env = process_env(
        INBOUND_CLASSIFIER="processing.tests.test_pipeline_classifiers.BoomClassifier",
        PROCESSOR_MAX_RETRIES="2",
        PROCESSOR_RETRY_DELAY_MS="100",
    )
    processes("inbound", worker_argv("inbound", node_name=node, concurrency=2), env=env)
    mailbox = Mailbox.objects.create(address="worker@example.com")
    now = datetime.now(tz=UTC)
    good = email_store(mailbox=mailbox, message=ProviderMessage("g", 1, RAW % b"Sync?", now), source="webhook")
    bad = email_store(mailbox=mailbox, message=ProviderMessage("b", 2, RAW % b"boom", now), source="backfill")

    result = wait_until(lambda: EmailResult.objects.filter(email=good).first(), timeout=30, what="classified")
    assert (result.classification, result.confidence, result.processor_id) == ("meeting", 0.9, f"{node}/boom@t1")
    failed = wait_until(
        lambda: InboundEmail.objects.filter(pk=bad.pk, status="failed").first(), timeout=30, what="failed"
    )
    assert failed.attempts == 3 and "RuntimeError: cannot classify 'boom'" in failed.last_error
    assert not EmailResult.objects.filter(email=bad).exists()
