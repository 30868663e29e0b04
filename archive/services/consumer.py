"""The archiver's loop: receive a batch from the archive queue, store each message's document once, delete what
was stored (or found stored), repeat.

Guarantees, and what they rest on:
- never lost: a message is deleted only after its document was written or found already written; a message
  whose write keeps failing stays on the queue and comes back after VISIBILITY_TIMEOUT_SECONDS;
- never archived twice: its key comes from the message alone and storage writes are conditional (first wins);
- a message that can never be archived (bad JSON, a missing or malformed field) goes to the dead-letter queue at
  once, with the reason; one that keeps failing for any other reason goes there through the queue's redrive
  policy after ARCHIVE_MAX_RECEIVE_COUNT receives;
- a stop request (SIGTERM, SIGINT) ends the loop after the batch in hand is written and deleted.
"""

import logging
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone

from archive import metrics
from archive.services.health import archiver_heartbeat_write
from archive.services.messages import InvalidArchiveMessage, archive_message_parse
from archive.services.queue import archive_dead_letter_queue_url, archive_queue_depth
from archive.services.storage import ArchiveStorage
from emailsys.eventbus import BridgeControl, sqs_retrying
from emailsys.sqs import sqs_client

logger = logging.getLogger(__name__)
SQS_MAX_BATCH = 10  # ReceiveMessage and DeleteMessageBatch take at most 10
SQS_MAX_WAIT = 20  # ReceiveMessage's longest long poll
HEARTBEAT_EVERY = 5.0  # seconds between heartbeats written to Redis
DEPTH_EVERY = 15.0  # seconds between queue-depth refreshes
STOP_GRACE = 10.0  # after a stop request, failing writes and deletes are retried this long at most

ARCHIVED = "archived"
ALREADY_ARCHIVED = "already_archived"
DEAD_LETTERED = "dead_lettered"
FAILED = "failed"  # left on the queue: it comes back
DELETABLE = {ARCHIVED, ALREADY_ARCHIVED, DEAD_LETTERED}


@dataclass
class ArchiverControl(BridgeControl):
    """The bridge's control (stop flag, `busy` while a batch is in hand) plus what the archiver reports."""

    last_beat: float = field(default_factory=time.monotonic)  # the loop's last sign of life (monotonic)
    outcomes: dict[str, int] = field(default_factory=dict)
    stop_deadline: float | None = None  # set when a stop request is first seen by a retry
    _heartbeat_written: float = 0.0

    def retry_until(self, deadline: float) -> float:
        """`deadline`, or sooner once a stop is requested: an orchestrator's kill timeout (often 30 s) must not
        find the archiver still retrying a storage outage. What is not done then comes back from the queue."""
        if not self.stop_requested:
            return deadline
        if self.stop_deadline is None:
            self.stop_deadline = time.monotonic() + STOP_GRACE
        return min(deadline, self.stop_deadline)

    def beat(self) -> None:
        self.last_beat = time.monotonic()
        if self.last_beat - self._heartbeat_written >= HEARTBEAT_EVERY:
            self._heartbeat_written = self.last_beat
            archiver_heartbeat_write(archived=self.outcomes.get(ARCHIVED, 0), failed=self.outcomes.get(FAILED, 0))

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        metrics.messages.labels(outcome).inc()


def archive_poll_settings() -> tuple[int, int, float]:
    """(messages per receive, long-poll wait, idle pause) from the seed's settings. POLL_INTERVAL_SECONDS is the
    time between polls of an idle queue: a long poll of up to 20 s, then a pause for the rest. A poll that found
    messages is followed by the next one at once, so a backlog drains at full speed."""
    per_poll = settings.MAX_MESSAGES_PER_POLL
    if not 1 <= per_poll <= SQS_MAX_BATCH:
        raise ValueError(f"MAX_MESSAGES_PER_POLL must be 1 to {SQS_MAX_BATCH} (an SQS receive), not {per_poll}")
    interval = max(settings.POLL_INTERVAL_SECONDS, 0)
    wait = min(SQS_MAX_WAIT, int(interval))
    return per_poll, wait, max(interval - wait, 0)


def archive_run(*, queue_url: str, storage: ArchiveStorage, control: ArchiverControl, once: bool = False) -> None:
    """Runs the loop until a stop is requested (or after one receive with `once`)."""
    client = sqs_client()
    per_poll, wait, pause = archive_poll_settings()
    dead_letter_url = sqs_retrying(
        lambda: archive_dead_letter_queue_url(queue_url), what="dead-letter queue lookup", control=control
    )
    if dead_letter_url is None and not control.stop_requested:
        logger.warning("archive queue %s has no dead-letter queue: refused messages stay on it", queue_url)
    depth_read = 0.0
    while not control.stop_requested:
        if time.monotonic() - depth_read >= DEPTH_EVERY:
            depth_read = time.monotonic()
            _depth_refresh(queue_url, dead_letter_url)

        def receive() -> dict:
            control.beat()  # an SQS outage waited out is the loop alive, not stuck
            try:
                return client.receive_message(
                    QueueUrl=queue_url,
                    MaxNumberOfMessages=per_poll,
                    WaitTimeSeconds=wait,
                    VisibilityTimeout=settings.VISIBILITY_TIMEOUT_SECONDS,
                    MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
                )
            except Exception:
                metrics.errors.labels("receive").inc()
                raise

        response = sqs_retrying(receive, what="receive", control=control)
        if response is None:
            break
        messages = response.get("Messages", [])
        if messages:
            control.busy = True
            try:
                archive_batch(queue_url=queue_url, dead_letter_url=dead_letter_url, messages=messages,
                              storage=storage, control=control)  # fmt: skip
            finally:
                control.busy = False
        if once:
            break
        if not messages and pause:
            _pause(pause, control)


def archive_batch(
    *, queue_url: str, dead_letter_url: str | None, messages: list[dict], storage: ArchiveStorage,
    control: ArchiverControl,
) -> dict[str, int]:  # fmt: skip
    """Archives one received batch, then deletes what may go. Storage errors are retried until 80 % of the
    visibility timeout has passed (so no other archiver has the message yet); returns the batch's outcomes."""
    deadline = time.monotonic() + 0.8 * settings.VISIBILITY_TIMEOUT_SECONDS
    outcomes: dict[str, int] = {}
    deletable: list[dict] = []
    for message in messages:
        try:
            outcome = archive_message_handle(
                message=message, storage=storage, dead_letter_url=dead_letter_url, deadline=deadline, control=control
            )
        except Exception:  # noqa: BLE001 - one message's failure is that message's; it comes back (then the DLQ)
            logger.exception("archive: SQS message %s failed; it comes back after the visibility timeout",
                             message.get("MessageId"))  # fmt: skip
            metrics.errors.labels("message").inc()
            outcome = FAILED
        control.count(outcome)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome in DELETABLE:
            deletable.append(message)
    _delete(queue_url, deletable, control=control, deadline=deadline)
    control.handled += len(messages)
    return outcomes


def archive_message_handle(
    *, message: dict, storage: ArchiveStorage, dead_letter_url: str | None, deadline: float, control: ArchiverControl
) -> str:
    """One message's outcome (ARCHIVED, ALREADY_ARCHIVED, DEAD_LETTERED or FAILED); it is not deleted here."""
    sqs_id = message.get("MessageId", "")
    receives = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
    try:
        parsed = archive_message_parse(message.get("Body", ""), fallback_message_id=sqs_id)
    except InvalidArchiveMessage as error:
        return _dead_letter(message, reason=str(error), dead_letter_url=dead_letter_url, receives=receives)
    key = parsed.key()
    written = _write_retrying(storage, key, parsed.document_bytes(processed_at=timezone.now()), deadline, control)
    if written is None:
        logger.error("archive: %s (SQS message %s, receive %s) not written before the deadline; it comes back",
                     key, sqs_id, receives)  # fmt: skip
        return FAILED
    sent_ms = message.get("Attributes", {}).get("SentTimestamp")
    if written and sent_ms:
        metrics.latency.observe(max(time.time() - int(sent_ms) / 1000, 0))
    logger.info("archive: %s %s (SQS message %s, receive %s)", "stored" if written else "already archived", key,
                sqs_id, receives)  # fmt: skip
    return ARCHIVED if written else ALREADY_ARCHIVED


def _write_retrying(storage: ArchiveStorage, key: str, body: bytes, deadline: float, control: ArchiverControl):
    """True (written), False (existed), or None: still failing at the deadline. Backoff 0.2 s doubling to 5 s."""
    delay = 0.2
    while True:
        try:
            created = storage.write_new(key, body)
        except Exception as error:  # noqa: BLE001 - every storage failure is retried, then left to redelivery
            metrics.storage_writes.labels(storage.label, "error").inc()
            metrics.errors.labels("storage").inc()
            if time.monotonic() + delay > control.retry_until(deadline):
                logger.error("archive: writing %s failed, giving up for now: %s", key, error)
                return None
            logger.warning("archive: writing %s failed, again in %.1fs: %s", key, delay, error)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            control.beat()
            continue
        metrics.storage_writes.labels(storage.label, "created" if created else "exists").inc()
        return created


def _dead_letter(message: dict, *, reason: str, dead_letter_url: str | None, receives: str) -> str:
    """A message that can never be archived: copied to the dead-letter queue with the reason (attribute
    ArchiveError), then deleted by the caller. Without a dead-letter queue, or when the copy fails, it stays (the
    redrive policy, if any, moves it after enough receives)."""
    sqs_id = message.get("MessageId")
    if dead_letter_url is None:
        logger.error("archive: SQS message %s refused (receive %s): %s; no dead-letter queue, left on the queue",
                     sqs_id, receives, reason)  # fmt: skip
        return FAILED
    try:
        sqs_client().send_message(
            QueueUrl=dead_letter_url,
            MessageBody=message.get("Body") or "(empty)",
            MessageAttributes={
                "ArchiveError": {"DataType": "String", "StringValue": reason[:1000]},
                "SourceMessageId": {"DataType": "String", "StringValue": sqs_id or "?"},
            },
        )
    except Exception as error:  # noqa: BLE001 - stays on the queue, tried again on its next receive
        metrics.errors.labels("dead_letter").inc()
        logger.error("archive: SQS message %s refused (%s) but not moved to the dead-letter queue: %s", sqs_id,
                     reason, error)  # fmt: skip
        return FAILED
    logger.error("archive: SQS message %s refused (receive %s): %s; moved to the dead-letter queue", sqs_id,
                 receives, reason)  # fmt: skip
    return DEAD_LETTERED


def _delete(queue_url: str, messages: list[dict], *, control: ArchiverControl, deadline: float) -> None:
    """Deletes in batches of 10, retrying what SQS did not delete until the deadline. A message left undeleted
    comes back and is found already archived."""
    client = sqs_client()
    pending = {str(index): message["ReceiptHandle"] for index, message in enumerate(messages)}
    delay = 0.2
    while pending:
        chunk = dict(list(pending.items())[:SQS_MAX_BATCH])
        try:
            response = client.delete_message_batch(
                QueueUrl=queue_url, Entries=[{"Id": i, "ReceiptHandle": handle} for i, handle in chunk.items()]
            )
            for entry in response.get("Successful", []):
                pending.pop(entry["Id"], None)
            failed = []
            for entry in response.get("Failed", []):
                if entry.get("SenderFault"):  # e.g. a receipt handle gone stale: retrying cannot help
                    logger.warning("archive: message %s not deleted (%s); it comes back", entry["Id"], entry)
                    pending.pop(entry["Id"], None)
                else:
                    failed.append(entry)
            if not failed:
                continue
            error: object = failed
        except Exception as caught:  # noqa: BLE001 - retried below
            error = caught
        metrics.errors.labels("delete").inc()
        if time.monotonic() + delay > control.retry_until(deadline):
            logger.error("archive: %s message(s) archived but not deleted (they come back): %s", len(pending), error)
            return
        logger.warning("archive: delete failed, again in %.1fs: %s", delay, error)
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
        control.beat()


def _depth_refresh(queue_url: str, dead_letter_url: str | None) -> None:
    for name, url in (("main", queue_url), ("dead_letter", dead_letter_url)):
        if url is None:
            continue
        try:
            for state, count in archive_queue_depth(url).items():
                metrics.queue_messages.labels(name, state).set(count)
        except Exception as error:  # noqa: BLE001 - a gauge not refreshed is not a reason to stop
            logger.warning("archive: queue depth of %s not read: %s", name, error)


def _pause(seconds: float, control: ArchiverControl) -> None:
    end = time.monotonic() + seconds
    while not control.stop_requested and (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 1.0))
        control.beat()
