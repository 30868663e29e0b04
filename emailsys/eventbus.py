"""Events between parts of the system: a transactional outbox, published after commit to an SQS FIFO queue (or,
without SQS, straight to Celery), recorded once on receipt and run by one generic Celery task, one at a time and
in outbox order per (stream, key).

Life of an event:
  event_emit          an OutboxEvent row in the caller's transaction; after commit, event_publish
  event_publish       SQS send (group "stream:key", deduplication id = outbox id), or event_receive directly
  event_receive       ReceivedEvent row (INSERT … ON CONFLICT DO NOTHING on outbox_id), then event_dispatch_next
  event_dispatch_next under the key's lock: if nothing of the key is in flight and every earlier outbox row of
                      the key was received, the oldest received event becomes `dispatched` and its task is sent
                      (after commit) to the stream's queue
  event_run           (the task, `emailsys.run_event`, sent by name) dispatched → started, handler(event=...),
                      → done | failed, dispatch the next one
  event_sweep         (beat) publishes what a crash left unpublished, re-sends tasks a broker lost

Ordering rests on two things in PostgreSQL, not on the broker: a transaction-level advisory lock per key, taken
by emitters (so a key's outbox ids are in commit order) and by every dispatch decision; and a partial unique
index allowing one dispatched-or-started event per key (ReceivedEvent.Meta), which holds whatever races.
"""

import json
import logging
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone
from django.utils.module_loading import import_string

from emailsys.celery import app as celery_app
from emailsys.health import process_heartbeat_record
from emailsys.models import OutboxEvent, ReceivedEvent
from emailsys.sqs import sqs_client, sqs_configured, sqs_message_send, sqs_queue_url

logger = logging.getLogger(__name__)
State = ReceivedEvent.State
SWEEP_BATCH = 500
# emailsys.tasks.run_event, which calls event_run: sent by name, so the bus does not import the tasks built on it.
RUN_EVENT_TASK = "emailsys.run_event"
T = TypeVar("T")


@dataclass(frozen=True)
class EventMessage:
    """What travels through SQS: everything a receiver needs to record the event without reading the outbox."""

    outbox_id: int
    stream: str
    key: str
    kind: str
    payload: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(
            {"outbox_id": self.outbox_id, "stream": self.stream, "key": self.key, "kind": self.kind,
             "payload": self.payload},
            separators=(",", ":"),
        )  # fmt: skip

    @classmethod
    def from_json(cls, body: str) -> "EventMessage":
        """Raises ValueError for anything but a well-formed event message."""
        try:
            data = json.loads(body)
            message = cls(
                outbox_id=data["outbox_id"], stream=data["stream"], key=data["key"], kind=data["kind"],
                payload=data.get("payload") or {},
            )  # fmt: skip
        except (TypeError, KeyError, json.JSONDecodeError) as error:
            raise ValueError(f"not an event message: {error!r}") from error
        if not isinstance(message.outbox_id, int) or message.outbox_id <= 0:
            raise ValueError(f"bad outbox id {message.outbox_id!r}")
        if not all(isinstance(value, str) and value for value in (message.stream, message.key, message.kind)):
            raise ValueError("stream, key and kind must be non-empty strings")
        if not isinstance(message.payload, dict):
            raise ValueError("payload must be an object")
        return message


def stream_config(stream: str) -> dict[str, str]:
    """The stream's handler path and queue from settings.EVENT_HANDLERS; a clear error for an unknown stream."""
    config = settings.EVENT_HANDLERS.get(stream)
    if not config or not config.get("handler"):
        raise ImproperlyConfigured(f"no handler for event stream {stream!r} in settings.EVENT_HANDLERS")
    if config.get("queue") not in settings.WORKER_POOLS:
        raise ImproperlyConfigured(f"event stream {stream!r}: queue {config.get('queue')!r} is not a worker pool")
    return config


def _key_lock(*, stream: str, key: str) -> None:
    """Transaction-level advisory lock on one key (released at commit or rollback). Two keys sharing a hash only
    wait for each other."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"eventbus:{stream}:{key}"])


def event_emit(*, stream: str, key: str, kind: str, payload: dict | None = None) -> int:
    """Writes one outbox row in the caller's transaction and returns its id; the event is published after that
    transaction commits (and not at all if it rolls back).

    Holds the key's lock until the caller's commit: emitters of one key commit one after the other, so the key's
    outbox ids are in commit order. A transaction emitting for several keys should emit them in a stable order."""
    stream_config(stream)
    with transaction.atomic():
        _key_lock(stream=stream, key=key)
        outbox = OutboxEvent.objects.create(stream=stream, key=key, kind=kind, payload=payload or {})
        transaction.on_commit(partial(_publish_after_commit, outbox.id))
    return outbox.id


def _publish_after_commit(outbox_id: int) -> None:
    try:
        event_publish(outbox_id=outbox_id)
    except Exception:  # noqa: BLE001 - the caller's transaction is committed; the sweeper publishes it later
        logger.exception("outbox %s: publish failed; the sweeper publishes it again", outbox_id)


def event_publish(*, outbox_id: int) -> bool:
    """Publishes one committed outbox row: to SQS when configured, else records it as received right away.
    Safe to repeat: SQS drops a repeated deduplication id (5 minutes) and the receive side is unique on it."""
    outbox = OutboxEvent.objects.filter(id=outbox_id).first()
    if outbox is None:
        return False
    message = EventMessage(outbox.id, outbox.stream, outbox.key, outbox.kind, outbox.payload)
    if sqs_configured():
        sqs_message_send(
            queue_url=sqs_queue_url(),
            body=message.to_json(),
            group_id=f"{outbox.stream}:{outbox.key}",
            deduplication_id=str(outbox.id),
        )
        OutboxEvent.objects.filter(id=outbox.id).update(published_at=timezone.now())
    else:
        event_receive(message=message, via=ReceivedEvent.Via.DIRECT)
    return True


def event_receive(*, message: EventMessage, via: str) -> tuple[int, bool]:
    """Records a received event once and dispatches its key's next event, in one transaction. Returns
    (received event id, whether it was new). A redelivered message finds its row and changes nothing."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                f"""INSERT INTO {ReceivedEvent._meta.db_table}
                      (outbox_id, stream, key, kind, payload, via, state, received_at, attempts, last_error)
                    VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s, %s, 0, '')
                    ON CONFLICT (outbox_id) DO NOTHING RETURNING id""",  # noqa: S608 - table name from the model
                [message.outbox_id, message.stream, message.key, message.kind, json.dumps(message.payload), via,
                 State.RECEIVED, timezone.now()],
            )  # fmt: skip
            row = cursor.fetchone()
        if row is None:
            return ReceivedEvent.objects.values_list("id", flat=True).get(outbox_id=message.outbox_id), False
        OutboxEvent.objects.filter(id=message.outbox_id, published_at__isnull=True).update(published_at=timezone.now())
        event_dispatch_next(stream=message.stream, key=message.key)
    return row[0], True


def event_dispatch_next(*, stream: str, key: str) -> int | None:
    """Dispatches the key's next event if it may run now; returns its id. Call it after anything that could
    unblock a key (an event received or finished). Safe to call any time, from any process."""
    with transaction.atomic():
        _key_lock(stream=stream, key=key)
        return _dispatch_next_locked(stream=stream, key=key)


def _dispatch_next_locked(*, stream: str, key: str) -> int | None:
    """The key's lock is held. Next = the oldest received event, if nothing of the key is in flight and no earlier
    outbox row of the key is still on its way (published late, or SQS delivered a later one first)."""
    events = ReceivedEvent.objects.filter(stream=stream, key=key)
    while True:
        if events.filter(state__in=ReceivedEvent.IN_FLIGHT).exists():
            return None
        candidate = events.filter(state=State.RECEIVED).order_by("outbox_id").first()
        if candidate is None:
            return None
        not_received = OutboxEvent.objects.filter(stream=stream, key=key, id__lt=candidate.outbox_id).filter(
            ~Exists(ReceivedEvent.objects.filter(outbox_id=OuterRef("id")))
        )
        if not_received.exists():
            return None
        now = timezone.now()
        try:
            queue = stream_config(stream)["queue"]
        except ImproperlyConfigured as error:
            logger.error("event %s (outbox %s): %s; marked failed", candidate.id, candidate.outbox_id, error)
            events.filter(id=candidate.id).update(state=State.FAILED, finished_at=now, last_error=str(error))
            continue
        events.filter(id=candidate.id, state=State.RECEIVED).update(state=State.DISPATCHED, dispatched_at=now)
        transaction.on_commit(partial(_send_run_task, candidate.id, queue))
        return candidate.id


def _send_run_task(event_id: int, queue: str) -> None:
    try:
        celery_app.send_task(RUN_EVENT_TASK, args=[event_id], queue=queue, ignore_result=True)
    except Exception:  # noqa: BLE001 - the row says dispatched; the sweeper sends the task again
        logger.exception("event %s: sending its task to %s failed; the sweeper sends it again", event_id, queue)


def event_redispatch(*, event_id: int) -> bool:
    """Dispatches a received event again (its task is sent once more): for a sweeper that knows the work stalled,
    e.g. a dead worker's lease expired. The caller vouches that no worker still runs it: a started event becomes
    dispatched, and the next worker to take the task runs the handler again. Returns False for an event already
    done or failed, or one that is not yet next for its key."""
    event = ReceivedEvent.objects.filter(id=event_id).values("stream", "key").first()
    if event is None:
        return False
    with transaction.atomic():
        _key_lock(stream=event["stream"], key=event["key"])
        again = ReceivedEvent.objects.filter(id=event_id, state__in=ReceivedEvent.IN_FLIGHT).update(
            state=State.DISPATCHED, dispatched_at=timezone.now()
        )
        if again:
            transaction.on_commit(partial(_send_run_task, event_id, stream_config(event["stream"])["queue"]))
            return True
        return _dispatch_next_locked(stream=event["stream"], key=event["key"]) == event_id


def event_run(*, event_id: int) -> str | None:
    """Runs a dispatched event's handler; returns the final state, or None when there was nothing to run.

    Idempotent: only the call that moves the event dispatched → started runs the handler, so a duplicate task
    (a re-sent or redelivered one) is a no-op. A handler's exception marks the event failed with the traceback
    (logged, not raised: no crash loop). Either way the key's next event is dispatched."""
    now = timezone.now()
    claimed = ReceivedEvent.objects.filter(id=event_id, state=State.DISPATCHED).update(
        state=State.STARTED, started_at=now, attempts=F("attempts") + 1
    )
    if not claimed:
        logger.info("event %s: not dispatched (duplicate task or already run), nothing to do", event_id)
        return None
    event = ReceivedEvent.objects.get(id=event_id)
    try:
        handler = import_string(stream_config(event.stream)["handler"])
        handler(event=event)
    except Exception:  # noqa: BLE001 - any handler error fails this event, not the worker
        logger.exception("event %s (outbox %s, %s:%s %s) failed", event.id, event.outbox_id, event.stream,
                         event.key, event.kind)  # fmt: skip
        return _event_finish(event=event, state=State.FAILED, error=traceback.format_exc())
    return _event_finish(event=event, state=State.DONE, error="")


def _event_finish(*, event: ReceivedEvent, state: str, error: str) -> str:
    with transaction.atomic():
        _key_lock(stream=event.stream, key=event.key)
        finished = ReceivedEvent.objects.filter(id=event.id, state=State.STARTED).update(
            state=state, finished_at=timezone.now(), last_error=error
        )
        if not finished:  # redispatched meanwhile (event_redispatch): the new run finishes it
            logger.warning("event %s: redispatched while it ran; its state is left to the new run", event.id)
        _dispatch_next_locked(stream=event.stream, key=event.key)
    return state


@dataclass(frozen=True)
class SweepResult:
    published: int
    redispatched: int
    dispatched: int
    abandoned: int
    pruned: int = 0


def event_sweep() -> SweepResult:
    """Repairs what a crash or a lost broker left behind; every step is idempotent, so overlapping sweeps are safe.

    - outbox rows unpublished EVENT_PUBLISH_GRACE_SECONDS after creation (the process died between commit and
      publish), and rows SQS took EVENT_REPUBLISH_SECONDS ago that nobody received (e.g. dead-lettered), are
      published again;
    - events dispatched but not started within EVENT_DISPATCH_TIMEOUT get their task again (Redis lost it);
    - keys with a received event waiting that long and nothing in flight are dispatched;
    - events started longer ago than the handler's hard time limit cannot still be running: marked failed."""
    now = timezone.now()
    published = 0
    unpublished = OutboxEvent.objects.filter(
        published_at__isnull=True, created_at__lt=now - timedelta(seconds=settings.EVENT_PUBLISH_GRACE_SECONDS)
    )
    unreceived = OutboxEvent.objects.filter(
        published_at__lt=now - timedelta(seconds=settings.EVENT_REPUBLISH_SECONDS)
    ).filter(~Exists(ReceivedEvent.objects.filter(outbox_id=OuterRef("id"))))
    for queryset in (unpublished, unreceived):
        for outbox_id in queryset.order_by("id").values_list("id", flat=True)[:SWEEP_BATCH]:
            try:
                published += event_publish(outbox_id=outbox_id)
            except Exception:  # noqa: BLE001 - SQS unreachable: the next sweep tries again
                logger.exception("outbox %s: publish failed", outbox_id)
                break
    stale = now - timedelta(seconds=settings.EVENT_DISPATCH_TIMEOUT)
    lost = ReceivedEvent.objects.filter(state=State.DISPATCHED, dispatched_at__lt=stale)
    redispatched = sum(event_redispatch(event_id=i) for i in lost.values_list("id", flat=True)[:SWEEP_BATCH])
    waiting = (
        ReceivedEvent.objects.filter(state=State.RECEIVED, received_at__lt=stale)
        .values_list("stream", "key")
        .distinct()[:SWEEP_BATCH]
    )
    dispatched = sum(event_dispatch_next(stream=s, key=k) is not None for s, k in waiting)
    abandoned = 0
    dead_before = now - timedelta(seconds=settings.EVENT_HANDLER_TIME_LIMIT + 120)
    for event in ReceivedEvent.objects.filter(state=State.STARTED, started_at__lt=dead_before)[:SWEEP_BATCH]:
        logger.error("event %s: started %s and never finished (worker lost); marked failed", event.id, event.started_at)
        _event_finish(event=event, state=State.FAILED, error="worker lost: no finish within the handler time limit")
        abandoned += 1
    return SweepResult(
        published=published, redispatched=redispatched, dispatched=dispatched, abandoned=abandoned,
        pruned=event_prune(now=now),
    )  # fmt: skip


def event_prune(*, now: datetime) -> int:
    """Forgets events finished more than EVENT_RETENTION_DAYS ago (0: never), their outbox rows with them, so the
    sweeper's queries stay small. Long past SQS's retention (14 days at most), so no copy of one can still come
    back and run twice. At most SWEEP_BATCH per sweep."""
    if not settings.EVENT_RETENTION_DAYS:
        return 0
    cutoff = now - timedelta(days=settings.EVENT_RETENTION_DAYS)
    finished = ReceivedEvent.objects.filter(finished_at__lt=cutoff, state__in=ReceivedEvent.FINISHED)
    outbox_ids = list(finished.order_by("finished_at").values_list("outbox_id", flat=True)[:SWEEP_BATCH])
    if not outbox_ids:
        return 0
    with transaction.atomic():
        pruned, _ = ReceivedEvent.objects.filter(outbox_id__in=outbox_ids).delete()
        OutboxEvent.objects.filter(id__in=outbox_ids).delete()
    return pruned


# --- The SQS bridge ------------------------------------------------------------------------------------------------


@dataclass
class BridgeControl:
    """Shared with a signal handler: `busy` while a received batch is in hand, `stop_requested` once asked to stop."""

    stop_requested: bool = False
    busy: bool = False
    handled: int = 0


class StopRequested(BaseException):
    """Raised from the signal handler while no batch is in hand (a BaseException: botocore retries Exceptions)."""


def stop_on_signals(control: BridgeControl) -> None:
    """SIGTERM and SIGINT ask a consumer loop to stop: the batch in hand is finished first; outside one (a long poll,
    a retry's wait) StopRequested ends the loop at once."""

    def stop(signum, frame) -> None:
        control.stop_requested = True
        if not control.busy:
            raise StopRequested

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def sqs_message_handle(*, queue_url: str, message: dict) -> str:
    """Records one SQS message as a received event and deletes it from the queue only after that commit.
    Returns "recorded", "duplicate" or "unreadable". An unreadable message is made visible again at once and is
    moved to the dead-letter queue by SQS after SQS_MAX_RECEIVE_COUNT receives. A database error propagates: the
    message stays and comes back after its visibility timeout."""
    client = sqs_client()
    receive_count = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
    try:
        event_message = EventMessage.from_json(message["Body"])
    except ValueError as error:
        logger.error("SQS message %s unreadable (receive %s of %s): %s", message.get("MessageId"), receive_count,
                     settings.SQS_MAX_RECEIVE_COUNT, error)  # fmt: skip
        client.change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
        return "unreadable"
    event_id, new = event_receive(message=event_message, via=ReceivedEvent.Via.SQS)
    client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    outcome = "recorded" if new else "duplicate"
    logger.info("outbox %s %s:%s %s %s as event %s (receive %s)", event_message.outbox_id, event_message.stream,
                event_message.key, event_message.kind, outcome, event_id, receive_count)  # fmt: skip
    return outcome


def sqs_bridge_run(*, queue_url: str, wait_seconds: int, once: bool, control: BridgeControl) -> None:
    """Long-polls the queue and hands each message to sqs_message_handle, in order, until asked to stop (or after
    one receive with `once`). A stop request during a batch finishes the message in hand; the rest of the batch
    is made visible again for another bridge. Counts handled messages in `control.handled`."""
    client = sqs_client()
    while not control.stop_requested:
        process_heartbeat_record(role="sqs-bridge", extra={"handled": control.handled})  # manage.py probe sqs-bridge
        response = sqs_retrying(
            lambda: client.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=wait_seconds,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "MessageGroupId"],
            ),
            what="receive",
            control=control,
        )
        if response is None:
            break
        control.busy = True
        try:
            messages = response.get("Messages", [])
            for index, message in enumerate(messages):
                if control.stop_requested:
                    _release(client, queue_url, messages[index:])
                    break
                try:
                    sqs_message_handle(queue_url=queue_url, message=message)
                except DatabaseError:  # not recorded, not deleted: SQS shows it again after the visibility timeout
                    logger.exception("SQS message %s not recorded; it comes back", message.get("MessageId"))
                    close_old_connections()
                    continue
                control.handled += 1
        finally:
            control.busy = False
        if once:
            break


def _release(client, queue_url: str, messages: list[dict]) -> None:
    entries = [
        {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"], "VisibilityTimeout": 0}
        for index, message in enumerate(messages)
    ]
    client.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)


def sqs_retrying(call: Callable[[], T], *, what: str, control: BridgeControl, max_delay: float = 10.0) -> T | None:
    """Calls until SQS answers (an outage or a queue not created yet is waited out, 0.5 s doubling to `max_delay`),
    or returns None once a stop is requested."""
    delay = 0.5
    while not control.stop_requested:
        try:
            return call()
        except (BotoCoreError, ClientError) as error:
            logger.warning("SQS %s failed, again in %.1fs: %s", what, delay, error)
            time.sleep(delay)
            delay = min(delay * 2, max_delay)
    return None
