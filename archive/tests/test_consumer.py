"""The archiver's loop in this process against moto's SQS and S3: what is stored, what is deleted, what goes to
the dead-letter queue; its health endpoints and heartbeat."""

import json
import time

import pytest
import requests

from archive import metrics
from archive.services import (
    ArchiverControl,
    LocalArchiveStorage,
    archive_message_send,
    archive_queues_ensure,
    archive_run,
    archive_storage,
    archiver_health,
    archiver_health_server,
    archiver_heartbeat_write,
)
from archive.services.health import HEARTBEATS_KEY
from emailsys.ops_clients import ops_redis
from emailsys.sqs import sqs_client
from emailsys.testing import wait_until

SEED = {"email_subject": "Hello", "email_sender": "john.doe@example.com", "email_timestream": "1733841022",
        "email_content": "Body"}  # fmt: skip


def body(**changes) -> str:
    return json.dumps({**SEED, **changes})


def run_once(setup, storage=None) -> ArchiverControl:
    control = ArchiverControl()
    archive_run(queue_url=setup.queue_url, storage=storage or archive_storage(), control=control, once=True)
    return control


def stored(setup, key: str) -> dict:
    return json.loads(setup.s3.get_object(Bucket=setup.bucket, Key=key)["Body"].read())


def test_messages_are_stored_at_their_keys_and_deleted_and_a_bad_one_goes_to_the_dead_letter_queue(
    archive_setup, caplog
) -> None:
    for number in range(3):
        archive_message_send(body=json.dumps({"message_id": f"m{number}", "email_data": {
            **SEED, "email_timestream": str(1733841022 + number)}, "metadata": {"source": "test"}}))  # fmt: skip
    archive_message_send(body=body(email_timestream="next tuesday"))
    control = run_once(archive_setup)

    assert control.outcomes == {"archived": 3, "dead_lettered": 1}
    assert sorted(archive_setup.keys()) == [f"emails/2024/12/10/john.doe/m{n}_14302{2 + n}.json" for n in range(3)]
    document = stored(archive_setup, "emails/2024/12/10/john.doe/m1_143023.json")
    assert document["email_data"] == {**SEED, "email_timestream": "1733841023"}
    assert document["metadata"] == {"processor_version": "1.0.0", "source": "test"}
    assert archive_setup.counts() == (0, 0), "stored and refused messages are deleted from the queue"
    dead = sqs_client().receive_message(QueueUrl=archive_setup.dead_letter_url, MessageAttributeNames=["All"])
    [message] = dead["Messages"]
    assert json.loads(message["Body"])["email_timestream"] == "next tuesday"
    assert "not seconds since the epoch" in message["MessageAttributes"]["ArchiveError"]["StringValue"]
    assert "moved to the dead-letter queue" in caplog.text


def test_an_existing_object_is_already_archived_left_alone_and_the_message_deleted(archive_setup) -> None:
    key = "emails/2024/12/10/john.doe/dup_143022.json"
    archive_setup.s3.put_object(Bucket=archive_setup.bucket, Key=key, Body=b'{"first": true}')
    before = metrics.messages.labels("already_archived")._value.get()
    archive_message_send(body=json.dumps({"message_id": "dup", "email_data": SEED}))
    archive_message_send(body=json.dumps({"message_id": "dup", "email_data": SEED}))  # a producer's repeat
    control = run_once(archive_setup)

    assert control.outcomes == {"already_archived": 2}
    assert stored(archive_setup, key) == {"first": True}
    assert archive_setup.counts() == (0, 0)
    assert metrics.messages.labels("already_archived")._value.get() == before + 2


def test_a_message_that_keeps_failing_goes_to_the_dead_letter_queue_after_the_receive_limit(
    archive_setup, settings, tmp_path
) -> None:
    archive_queues_ensure(name=archive_setup.queue_name, max_receive_count=2, visibility_timeout=1)
    settings.VISIBILITY_TIMEOUT_SECONDS = 1  # retries stop after 0.8 s; the message is back 1 s after receipt
    storage = LocalArchiveStorage(tmp_path)
    (tmp_path / "emails").write_text("a file where the archive's folders should be")  # every write fails
    archive_message_send(body=body())

    def dead_lettered() -> bool:
        run_once(archive_setup, storage)
        return archive_setup.counts(archive_setup.dead_letter_url)[0] == 1

    wait_until(dead_lettered, timeout=30, interval=0.2, what="the failing message in the dead-letter queue")
    assert archive_setup.counts() == (0, 0)
    assert not list(tmp_path.rglob("*.json"))


def test_local_storage_gets_the_same_layout(archive_setup, settings, tmp_path) -> None:
    settings.ARCHIVE_S3_BUCKET, settings.ARCHIVE_LOCAL_DIR = "", tmp_path
    archive_message_send(body=body(email_sender='"Jane/../Smith" <x@example.com>'))
    archive_message_send(body=body(email_sender="jane.smith@example.com"))
    control = run_once(archive_setup)

    assert control.outcomes == {"archived": 2}
    files = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*.json"))
    assert [path.rsplit("/", 2)[1] for path in files] == ["jane.smith", "x"]
    assert all(path.startswith("emails/2024/12/10/") and path.endswith("_143022.json") for path in files)


def test_health_endpoints_and_metrics(archive_setup) -> None:
    control = ArchiverControl()
    server = archiver_health_server(
        host="127.0.0.1", port=0, live=lambda: (time.monotonic() - control.last_beat < 60, {}),
        ready=lambda: (False, {"queue": "unreachable"}),
    )  # fmt: skip
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        archive_message_send(body=body())
        archive_run(queue_url=archive_setup.queue_url, storage=archive_storage(), control=control, once=True)
        assert requests.get(f"{base}/livez", timeout=5).status_code == 200
        ready = requests.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 503 and ready.json() == {"status": "unhealthy", "queue": "unreachable"}
        text = requests.get(f"{base}/metrics", timeout=5).text
        assert 'archive_messages_total{outcome="archived"}' in text
        assert 'archive_storage_writes_total{outcome="created",storage="s3"}' in text
        assert "archive_latency_seconds_bucket" in text and 'archive_queue_messages{queue="main"' in text
        assert "inbound" not in text and "django_" not in text, "the archiver's metrics only"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("age", [5.0, 500.0])
def test_archiver_health_reads_the_freshest_heartbeat(settings, age: float) -> None:
    settings.ARCHIVE_HEARTBEAT_MAX_AGE = 60.0
    ops_redis().delete(HEARTBEATS_KEY)
    assert archiver_health()["healthy"] is False
    ops_redis().hset(HEARTBEATS_KEY, "other-host:1", json.dumps({"at": time.time() - age}))
    health = archiver_health()
    assert health["healthy"] is (age < 60) and health["archivers"] == (1 if age < 60 else 0)
    archiver_heartbeat_write(archived=3, failed=0)
    health = archiver_health()
    assert health["healthy"] is True and health["archivers"] == 1 + (age < 60)
    assert health["detail"] == f"{1 + (age < 60)} archiver(s) alive" and health["last_heartbeat_age_seconds"] < 5
