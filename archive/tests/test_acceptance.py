"""Acceptance (issue 14, Archive): 500 messages through moto's SQS into moto's S3 with the archiver a real process,
killed -9 twice and restarted, and a burst of S3 500 errors from a fault proxy in front of moto; then every
message is archived exactly once at its key with the seed's document, and both queues are empty. And a SIGTERM
in the middle of a batch: the batch is finished (written and deleted), the archiver exits 0."""

import json
import re
import signal
import time

import pytest

from archive.services import archive_message_parse
from archive.tests.faultproxy import FaultProxy
from emailsys.sqs import sqs_client
from emailsys.testing import BIN_DIR, wait_until

pytestmark = [pytest.mark.xdist_group("archive"), pytest.mark.timeout(180)]
SENDERS = ["john.doe@example.com", "Jane.Smith@Example.com", '"../../etc"@example.com', "ü.ser@example.com",
           '"a/b"@example.com']  # fmt: skip
START = 1733841022  # 2024-12-10 14:30:22 UTC


def archiver_argv(*extra: str) -> list[str]:
    return [str(BIN_DIR / "python"), "manage.py", "archive_emails", *extra]


def seed_bodies(count: int) -> list[str]:
    """Seed documents, half with a message id of their own, half without (the SQS id is used then)."""
    bodies = []
    for number in range(count):
        email_data = {"email_subject": f"Subject {number}", "email_sender": SENDERS[number % len(SENDERS)],
                      "email_timestream": str(START + number * 7), "email_content": f"Content {number} ✓"}  # fmt: skip
        if number % 2:
            bodies.append(json.dumps(email_data))
        else:
            bodies.append(json.dumps({"message_id": f"<m{number}@example.com>", "email_data": email_data,
                                      "metadata": {"source": "acceptance"}}))  # fmt: skip
    return bodies


def send_all(queue_url: str, bodies: list[str]) -> dict[str, str]:
    """Sends in batches of 10; returns SQS message id → body."""
    sent = {}
    for start in range(0, len(bodies), 10):
        chunk = bodies[start : start + 10]
        response = sqs_client().send_message_batch(
            QueueUrl=queue_url, Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(chunk)]
        )
        assert not response.get("Failed")
        sent |= {entry["MessageId"]: chunk[int(entry["Id"])] for entry in response["Successful"]}
    return sent


def expected_documents(sent: dict[str, str]) -> dict[str, dict]:
    """key → the document without processed_at, computed here from what was sent."""
    expected = {}
    for sqs_id, body in sent.items():
        message = archive_message_parse(body, fallback_message_id=sqs_id)
        document = message.document(processed_at=message.sent_at)
        del document["processed_at"]
        expected[message.key()] = document
    return expected


def test_500_messages_archived_exactly_once_through_kills_and_s3_errors(archive_setup, processes) -> None:
    sent = send_all(archive_setup.queue_url, seed_bodies(500))
    expected = expected_documents(sent)
    assert len(expected) == 500, "every message has a key of its own"
    with FaultProxy(archive_setup.moto) as proxy:
        env = archive_setup.env(ARCHIVE_S3_ENDPOINT_URL=proxy.url)
        started = time.monotonic()
        first = processes("archiver-1", archiver_argv(), env=env)
        wait_until(lambda: len(archive_setup.keys()) >= 100, timeout=60, interval=0.05, what="100 archived")
        first.kill()
        proxy.fail_next(40, after_forwarding=False)  # S3 refuses 40 writes...
        second = processes("archiver-2", archiver_argv(), env=env)
        wait_until(lambda: proxy.faults_left == 0, timeout=60, what="the 500 burst answered")
        proxy.fail_next(20, after_forwarding=True)  # ... then 20 that it did store (the client sees a 500)
        wait_until(lambda: proxy.faults_left == 0 and len(archive_setup.keys()) >= 300, timeout=60, interval=0.05,
                   what="the second burst answered and 300 archived")  # fmt: skip
        second.kill()
        third = processes("archiver-3", archiver_argv(), env=env)
        wait_until(lambda: len(archive_setup.keys()) >= 500, timeout=120, interval=0.2, what="500 archived")
        # Nothing left once the killed archivers' messages came back (visibility timeout 4 s) and were handled.
        wait_until(lambda: archive_setup.counts() == (0, 0), timeout=30, interval=0.5, what="the queue empty")
        elapsed = time.monotonic() - started
        assert proxy.faults_answered == 60

    keys = archive_setup.keys()
    assert sorted(keys) == sorted(expected), "exactly the expected keys, each once"
    for key in keys:
        document = json.loads(archive_setup.s3.get_object(Bucket=archive_setup.bucket, Key=key)["Body"].read())
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", document.pop("processed_at")), key
        assert document == expected[key], key
    assert all(re.fullmatch(r"emails/2024/12/1[0-9]/[A-Za-z0-9._%-]+/[A-Za-z0-9._%-]+_\d{6}\.json", k) for k in keys)
    assert archive_setup.counts(archive_setup.dead_letter_url) == (0, 0), "nothing dead-lettered"
    assert "already archived" in second.log(10_000) + third.log(10_000), "kills and lost answers were redelivered"
    third.signal_group(signal.SIGTERM)
    assert third.popen.wait(timeout=30) == 0
    print(f"500 messages archived in {elapsed:.1f}s with 2 kills and 60 injected S3 errors")


def test_sigterm_in_the_middle_of_a_batch_finishes_the_batch_and_exits_0(archive_setup, processes) -> None:
    sent = send_all(archive_setup.queue_url, seed_bodies(30))
    expected = expected_documents(sent)
    with FaultProxy(archive_setup.moto) as proxy:
        proxy.delay = 0.3  # each S3 request takes 0.3 s: a batch of 10 takes 3 s
        env = archive_setup.env(ARCHIVE_S3_ENDPOINT_URL=proxy.url, VISIBILITY_TIMEOUT_SECONDS="30")
        archiver = processes("archiver", archiver_argv(), env=env)
        wait_until(lambda: archive_setup.keys(), timeout=60, interval=0.05, what="the first document")
        archiver.signal_group(signal.SIGTERM)
        at_signal = len(archive_setup.keys())
        assert archiver.popen.wait(timeout=30) == 0
    written = archive_setup.keys()
    assert at_signal < len(written) == 10, "the batch in hand was finished, and no other begun"
    assert set(written) <= set(expected)
    assert archive_setup.counts() == (20, 0), "the finished batch was deleted; the rest is waiting, none in flight"
    assert "archive_emails stopped: {'archived': 10}" in archiver.log()


def test_sigterm_during_an_s3_outage_exits_within_the_grace_and_deletes_nothing(archive_setup, processes) -> None:
    send_all(archive_setup.queue_url, seed_bodies(5))
    with FaultProxy(archive_setup.moto) as proxy:
        proxy.fail_next(1_000_000)  # S3 answers every write with 500
        env = archive_setup.env(ARCHIVE_S3_ENDPOINT_URL=proxy.url, VISIBILITY_TIMEOUT_SECONDS="300")
        archiver = processes("archiver", archiver_argv(), env=env)
        wait_until(lambda: proxy.faults_answered >= 4, timeout=60, what="writes failing")
        stopped = time.monotonic()
        archiver.signal_group(signal.SIGTERM)
        assert archiver.popen.wait(timeout=30) == 0
        assert time.monotonic() - stopped < 20, "retries end 10 s after the stop request, not at the deadline"
    assert archive_setup.keys() == []
    assert sum(archive_setup.counts()) == 5, "nothing deleted: every message comes back after its visibility timeout"
