"""The event bus across real processes: moto's SQS server, `manage.py sqs_bridge` and Celery workers, each its own
process, on the test database and this test's Redis database. The "bustest" stream's handler (eventbus_handlers)
appends a line per run to a file, so order, overlap and which worker ran what are read from there."""

import json
import signal
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from emailsys.eventbus import event_emit, event_publish, event_sweep
from emailsys.models import OutboxEvent, ReceivedEvent
from emailsys.sqs import sqs_client, sqs_message_send, sqs_queues_ensure
from emailsys.testing import (
    process_env,
    sqs_bridge_argv,
    subprocess_database_url,
    unique_token,
    wait_until,
    worker_argv,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]
State = ReceivedEvent.State
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def sqs(moto_endpoint, settings, monkeypatch) -> dict[str, str]:
    """A fresh FIFO queue (+ dead-letter queue, 3 receives) on the session's moto server; this process publishes to
    it, and `env` configures project processes for it."""
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    name = f"bus-{unique_token()}.fifo"
    settings.SQS_ENDPOINT_URL, settings.SQS_QUEUE_NAME, settings.SQS_QUEUE_URL = moto_endpoint, name, ""
    settings.SQS_MAX_RECEIVE_COUNT = 3
    url, dead_letter_url = sqs_queues_ensure(name=name, max_receive_count=3, visibility_timeout=30)
    env = process_env(SQS_ENDPOINT_URL=moto_endpoint, SQS_QUEUE_NAME=name, SQS_WAIT_SECONDS="1", **AWS_ENV)
    env["SQS_MAX_RECEIVE_COUNT"] = "3"
    return {"url": url, "dead_letter_url": dead_letter_url, "env": env}


def queue_counts(url: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue."""
    attributes = sqs_client().get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def runs(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def all_finished(count: int) -> bool:
    return ReceivedEvent.objects.filter(state__in=ReceivedEvent.FINISHED).count() == count


def start_worker(processes, env: dict[str, str], name: str):
    return processes(name, worker_argv("workorders", node_name=f"{name}@%h", concurrency=2), env=env)


def test_events_pass_through_the_sqs_queue_bridge_and_worker(processes, sqs, tmp_path) -> None:
    log = tmp_path / "runs.jsonl"
    bridge = processes("bridge", sqs_bridge_argv(), env=sqs["env"])
    start_worker(processes, sqs["env"], "w1")
    ids = [event_emit(stream="bustest", key=key, kind="k", payload={"log": str(log)}) for key in ("a", "b", "a")]
    assert OutboxEvent.objects.filter(published_at__isnull=False).count() == 3, "published to SQS after commit"

    wait_until(lambda: all_finished(3), timeout=60, what="three events done")
    events = ReceivedEvent.objects.order_by("outbox_id")
    assert [(e.outbox_id, e.via, e.state) for e in events] == [(i, "sqs", State.DONE) for i in ids]
    assert sorted(r["outbox_id"] for r in runs(log)) == ids
    assert [r["outbox_id"] for r in runs(log) if r["key"] == "a"] == [ids[0], ids[2]]
    assert queue_counts(sqs["url"]) == (0, 0), "every message deleted after it was recorded"
    assert all(f"outbox {i} bustest:" in bridge.log(200) for i in ids), "each event came through the bridge"


def test_a_redelivered_message_is_recognised_and_runs_once(processes, sqs, tmp_path) -> None:
    log = tmp_path / "runs.jsonl"
    bridge = processes("bridge", sqs_bridge_argv(), env=sqs["env"])
    start_worker(processes, sqs["env"], "w1")
    outbox_id = event_emit(stream="bustest", key="a", kind="k", payload={"log": str(log)})
    wait_until(lambda: all_finished(1), timeout=60, what="event done")
    body = json.dumps({"outbox_id": outbox_id, "stream": "bustest", "key": "a", "kind": "k", "payload": {}})
    # A new deduplication id gets past SQS's own deduplication, as a redelivery after 5 minutes would.
    sqs_message_send(queue_url=sqs["url"], body=body, group_id="bustest:a", deduplication_id="again")
    wait_until(lambda: "duplicate as event" in bridge.log(200), timeout=30, what="redelivery recognised")
    wait_until(lambda: queue_counts(sqs["url"]) == (0, 0), timeout=10, what="redelivered message deleted")
    assert ReceivedEvent.objects.get().attempts == 1
    assert len(runs(log)) == 1


def test_two_bridges_and_two_workers_run_each_keys_events_in_order_one_at_a_time(processes, sqs, tmp_path) -> None:
    log = tmp_path / "runs.jsonl"
    for name in ("bridge1", "bridge2"):
        processes(name, sqs_bridge_argv(), env=sqs["env"])
    for name in ("w1", "w2"):
        start_worker(processes, sqs["env"], name)
    keys, per_key = [f"wo{n}" for n in range(4)], 5
    emitted: dict[str, list[int]] = {key: [] for key in keys}
    for round_ in range(per_key):  # interleaved: one event of every key per round, each in its own transaction
        for key in keys:
            payload = {"log": str(log), "sleep": 0.15}
            emitted[key].append(event_emit(stream="bustest", key=key, kind=f"r{round_}", payload=payload))

    total = len(keys) * per_key
    wait_until(lambda: all_finished(total), timeout=120, interval=0.5, what=f"{total} events done")
    assert ReceivedEvent.objects.filter(state=State.DONE, via="sqs").count() == total
    lines = runs(log)
    assert len(lines) == total, "each event ran exactly once"
    for key in keys:
        mine = sorted((r for r in lines if r["key"] == key), key=lambda r: r["start"])
        assert [r["outbox_id"] for r in mine] == emitted[key], f"{key}: not in outbox order"
        for before, after in zip(mine, mine[1:], strict=False):
            assert before["end"] <= after["start"], f"{key}: {before['outbox_id']} and {after['outbox_id']} overlap"
    workers = {r["worker"].split("@")[0] for r in lines}
    assert workers == {"w1", "w2"}, f"both workers should have run events: {workers}"


def test_an_unreadable_message_goes_to_the_dead_letter_queue_and_others_flow(processes, sqs, tmp_path) -> None:
    bridge = processes("bridge", sqs_bridge_argv(), env=sqs["env"])
    sqs_message_send(queue_url=sqs["url"], body="not json", group_id="bustest:x", deduplication_id="garbage")
    wait_until(lambda: queue_counts(sqs["dead_letter_url"])[0] == 1, timeout=60, what="message dead-lettered")
    assert "unreadable (receive 3 of 3)" in bridge.log(200)
    outbox_id = event_emit(stream="bustest", key="x", kind="k")
    wait_until(lambda: ReceivedEvent.objects.filter(outbox_id=outbox_id).exists(), timeout=30, what="next recorded")
    # The bridge deletes a message right after the commit that recorded it: the queue empties a moment later.
    wait_until(lambda: queue_counts(sqs["url"]) == (0, 0), timeout=30, what="the queue empty")


def advisory_waiters() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        return cursor.fetchone()[0]


def test_sigterm_lets_the_bridge_finish_the_message_in_hand_then_exit_0(processes, sqs) -> None:
    """The test holds the key's lock, so the bridge stops inside recording the message; SIGTERM arrives then."""
    bridge = processes("bridge", sqs_bridge_argv(), env=sqs["env"])
    outbox = OutboxEvent.objects.create(stream="bustest", key="held", kind="k")
    with psycopg.connect(subprocess_database_url(), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", ["eventbus:bustest:held"])
        event_publish(outbox_id=outbox.id)
        wait_until(lambda: advisory_waiters() == 1, timeout=30, what="bridge waiting inside the message")
        bridge.popen.send_signal(signal.SIGTERM)
        with pytest.raises(TimeoutError):  # still finishing the message in hand
            wait_until(lambda: not bridge.alive, timeout=1, what="bridge exit")
        holder.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", ["eventbus:bustest:held"])
    assert bridge.popen.wait(timeout=15) == 0
    assert ReceivedEvent.objects.get(outbox_id=outbox.id).state == State.DISPATCHED
    assert queue_counts(sqs["url"]) == (0, 0), "the message in hand was deleted before exiting"


def test_sigterm_while_long_polling_exits_0_at_once(processes, sqs) -> None:
    bridge = processes("bridge", sqs_bridge_argv("--wait-seconds", "20"), env=sqs["env"])
    wait_until(lambda: "sqs_bridge polling" in bridge.log(), timeout=30, what="bridge polling")
    bridge.popen.send_signal(signal.SIGTERM)
    assert bridge.popen.wait(timeout=5) == 0


def test_without_sqs_events_go_straight_to_the_worker(processes, settings, tmp_path) -> None:
    settings.SQS_QUEUE_NAME = settings.SQS_QUEUE_URL = ""
    log = tmp_path / "runs.jsonl"
    start_worker(processes, process_env(SQS_QUEUE_NAME=""), "w1")
    ids = [event_emit(stream="bustest", key="k", kind=f"e{n}", payload={"log": str(log)}) for n in range(3)]
    wait_until(lambda: all_finished(3), timeout=60, what="three events done")
    assert set(ReceivedEvent.objects.values_list("via", flat=True)) == {"direct"}
    assert [r["outbox_id"] for r in runs(log)] == ids


def test_the_sweeper_publishes_an_outbox_row_a_crash_left_unpublished(processes, sqs, settings, tmp_path) -> None:
    log = tmp_path / "runs.jsonl"
    processes("bridge", sqs_bridge_argv(), env=sqs["env"])
    start_worker(processes, sqs["env"], "w1")
    outbox = OutboxEvent.objects.create(stream="bustest", key="k", kind="k", payload={"log": str(log)})  # no publish
    settings.EVENT_PUBLISH_GRACE_SECONDS = 0
    assert event_sweep().published == 1
    wait_until(lambda: all_finished(1), timeout=60, what="event done")
    assert ReceivedEvent.objects.get().via == "sqs" and runs(log)[0]["outbox_id"] == outbox.id


def test_the_sweeper_resends_a_task_the_broker_lost(processes, settings, tmp_path) -> None:
    """Dispatched while no worker ran, then Redis lost its queues (a restart keeps nothing)."""
    settings.SQS_QUEUE_NAME = settings.SQS_QUEUE_URL = ""
    log = tmp_path / "runs.jsonl"
    event_emit(stream="bustest", key="k", kind="k", payload={"log": str(log)})
    assert ReceivedEvent.objects.get().state == State.DISPATCHED
    from emailsys.ops_clients import ops_redis

    ops_redis().flushdb()
    start_worker(processes, process_env(), "w1")
    settings.EVENT_DISPATCH_TIMEOUT = 0
    assert event_sweep().redispatched == 1
    wait_until(lambda: all_finished(1), timeout=60, what="event done")
    assert len(runs(log)) == 1
