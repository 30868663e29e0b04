"""The event bus's state machine on the real PostgreSQL, without SQS (the direct path) and without a worker: the
test calls event_run where a worker would. Processes, SQS and races are in test_eventbus_processes.py."""

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.utils import timezone

from emailsys.eventbus import (
    EventMessage,
    event_dispatch_next,
    event_emit,
    event_receive,
    event_redispatch,
    event_run,
    event_sweep,
)
from emailsys.models import OutboxEvent, ReceivedEvent

pytestmark = pytest.mark.django_db(transaction=True)
State = ReceivedEvent.State


@pytest.fixture(autouse=True)
def _direct(settings) -> None:
    settings.SQS_QUEUE_NAME = settings.SQS_QUEUE_URL = ""


def runs(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def received(outbox_id: int) -> ReceivedEvent:
    return ReceivedEvent.objects.get(outbox_id=outbox_id)


def test_an_event_emitted_in_a_rolled_back_transaction_never_exists() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        event_emit(stream="bustest", key="k", kind="noop")
        raise RuntimeError("rollback")
    assert not OutboxEvent.objects.exists()
    assert not ReceivedEvent.objects.exists()


def test_an_unknown_stream_is_a_clear_error_at_emit_time() -> None:
    with pytest.raises(ImproperlyConfigured, match="no handler for event stream 'nope'"):
        event_emit(stream="nope", key="k", kind="noop")


def test_direct_path_records_after_commit_and_runs_a_keys_events_one_at_a_time_in_order(tmp_path) -> None:
    log = tmp_path / "runs.jsonl"
    with transaction.atomic():
        first = event_emit(stream="bustest", key="k1", kind="a", payload={"log": str(log)})
        assert not ReceivedEvent.objects.exists(), "recorded before the emitter's commit"
    second = event_emit(stream="bustest", key="k1", kind="b", payload={"log": str(log)})
    other = event_emit(stream="bustest", key="k2", kind="c", payload={"log": str(log)})

    assert received(first).state == State.DISPATCHED and received(first).via == ReceivedEvent.Via.DIRECT
    assert received(second).state == State.RECEIVED, "dispatched while an earlier event of its key is in flight"
    assert received(other).state == State.DISPATCHED, "another key waits for nothing"
    assert OutboxEvent.objects.filter(published_at__isnull=True).count() == 0

    assert event_run(event_id=received(second).id) is None, "an event not dispatched must not run"
    assert event_run(event_id=received(first).id) == State.DONE
    assert received(second).state == State.DISPATCHED, "finishing an event dispatches the key's next one"
    assert event_run(event_id=received(first).id) is None, "a duplicate task is a no-op"
    assert event_run(event_id=received(second).id) == State.DONE
    assert event_run(event_id=received(other).id) == State.DONE
    assert [r["outbox_id"] for r in runs(log) if r["key"] == "k1"] == [first, second]
    event = received(first)
    assert (event.attempts, event.last_error) == (1, "")
    assert event.received_at <= event.dispatched_at <= event.started_at <= event.finished_at


def test_a_redelivered_message_is_recognised_and_not_recorded_twice() -> None:
    outbox = OutboxEvent.objects.create(stream="bustest", key="k", kind="a")
    message = EventMessage(outbox.id, "bustest", "k", "a", {})
    event_id, new = event_receive(message=message, via=ReceivedEvent.Via.SQS)
    assert new
    event_run(event_id=event_id)
    assert event_receive(message=message, via=ReceivedEvent.Via.SQS) == (event_id, False)
    assert ReceivedEvent.objects.get().state == State.DONE
    assert OutboxEvent.objects.get().published_at is not None, "a received event was published"


def test_a_failing_handler_marks_the_event_failed_and_the_key_moves_on(tmp_path) -> None:
    failing = event_emit(stream="bustest", key="k", kind="a", payload={"fail": "boom"})
    after = event_emit(stream="bustest", key="k", kind="b")
    assert event_run(event_id=received(failing).id) == State.FAILED
    event = received(failing)
    assert "RuntimeError: asked to fail: boom" in event.last_error and event.finished_at
    assert received(after).state == State.DISPATCHED


def test_a_later_event_waits_for_an_earlier_outbox_row_published_late(settings) -> None:
    """The process died between commit and publish of the first event; the second was received first."""
    late = OutboxEvent.objects.create(stream="bustest", key="k", kind="a")  # committed, never published
    second = event_emit(stream="bustest", key="k", kind="b")
    assert received(second).state == State.RECEIVED
    settings.EVENT_PUBLISH_GRACE_SECONDS = 0
    assert event_sweep().published == 1
    assert received(late.id).state == State.DISPATCHED
    event_run(event_id=received(late.id).id)
    assert received(second).state == State.DISPATCHED


def test_the_database_refuses_two_events_of_a_key_in_flight() -> None:
    event_emit(stream="bustest", key="k", kind="a")
    waiting = received(event_emit(stream="bustest", key="k", kind="b"))
    with pytest.raises(IntegrityError), transaction.atomic():
        ReceivedEvent.objects.filter(id=waiting.id).update(state=State.DISPATCHED, dispatched_at=timezone.now())
    with pytest.raises(IntegrityError), transaction.atomic():
        ReceivedEvent.objects.filter(id=waiting.id).update(state=State.DONE)  # done without finished_at


def test_redispatch_runs_a_stalled_started_event_again_and_refuses_finished_ones() -> None:
    event = received(event_emit(stream="bustest", key="k", kind="a"))
    ReceivedEvent.objects.filter(id=event.id).update(state=State.STARTED, started_at=timezone.now(), attempts=1)
    assert event_redispatch(event_id=event.id)
    assert received(event.outbox_id).state == State.DISPATCHED
    assert event_run(event_id=event.id) == State.DONE
    assert received(event.outbox_id).attempts == 2
    assert not event_redispatch(event_id=event.id)
    assert not event_redispatch(event_id=10**9)


def test_sweeper_resends_tasks_dispatched_but_never_started(settings) -> None:
    event = received(event_emit(stream="bustest", key="k", kind="a"))
    settings.EVENT_DISPATCH_TIMEOUT = 0
    before = event.dispatched_at
    assert event_sweep().redispatched == 1
    assert received(event.outbox_id).dispatched_at > before
    assert event_dispatch_next(stream="bustest", key="k") is None, "still one in flight"


def test_an_event_of_a_stream_no_longer_configured_fails_instead_of_blocking_its_key() -> None:
    outbox = OutboxEvent.objects.create(stream="gone", key="k", kind="a")
    event_id, _ = event_receive(message=EventMessage(outbox.id, "gone", "k", "a", {}), via=ReceivedEvent.Via.SQS)
    event = ReceivedEvent.objects.get(id=event_id)
    assert (event.state, event.dispatched_at) == (State.FAILED, None)
    assert "no handler for event stream 'gone'" in event.last_error


def test_the_sweep_runs_on_beat_as_an_editable_periodic_task() -> None:
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(name="emailsys: sweep events")
    assert (task.task, task.queue, task.enabled) == ("emailsys.sweep_events", "default", True)


def test_the_sweeper_forgets_events_finished_longer_ago_than_the_retention(settings) -> None:
    settings.EVENT_RETENTION_DAYS = 30
    old, recent, unfinished = (event_emit(stream="bustest", key=key, kind="a") for key in ("k1", "k2", "k3"))
    for outbox_id in (old, recent):
        event_run(event_id=received(outbox_id).id)
    ReceivedEvent.objects.filter(outbox_id=old).update(finished_at=timezone.now() - timedelta(days=31))
    ReceivedEvent.objects.filter(outbox_id=unfinished).update(received_at=timezone.now() - timedelta(days=60))

    assert event_sweep().pruned == 1
    assert set(ReceivedEvent.objects.values_list("outbox_id", flat=True)) == {recent, unfinished}
    assert set(OutboxEvent.objects.values_list("id", flat=True)) == {recent, unfinished}
    settings.EVENT_RETENTION_DAYS = 0
    ReceivedEvent.objects.filter(outbox_id=recent).update(finished_at=timezone.now() - timedelta(days=400))
    assert event_sweep().pruned == 0
