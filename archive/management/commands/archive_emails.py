"""Archives every message of the archive queue (SQS, standard) as a JSON document in the seed's shape, at
emails/YYYY/MM/DD/<sender local part>/<message id>_<HHMMSS>.json: in ARCHIVE_LOCAL_DIR, or in the S3 bucket
ARCHIVE_S3_BUCKET (SSE-KMS with ARCHIVE_S3_KMS_KEY_ID). A message is deleted from the queue only after its
document is stored; a redelivered one finds its key taken ("already archived"). Run as many as you like.

SIGTERM or SIGINT: the batch in hand is stored and deleted, then the archiver exits 0 (a long poll in progress is
dropped; SQS shows what it returned again after the visibility timeout). With --health-port it serves /livez,
/readyz and /metrics."""

import logging
import time
from functools import partial

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from archive.services import (
    ArchiverControl,
    archive_queue_url,
    archive_queues_ensure,
    archive_run,
    archive_storage,
    archiver_health_server,
)
from archive.services.consumer import archive_poll_settings
from archive.services.queue import archive_queue_depth
from emailsys.eventbus import StopRequested, sqs_retrying, stop_on_signals

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("--queue-url", default="", help="default: ARCHIVE_QUEUE_URL, or ARCHIVE_QUEUE_NAME")
        parser.add_argument("--once", action="store_true", help="one receive (a batch at most), then exit")
        parser.add_argument("--setup", action="store_true", help="create the queue and its dead-letter queue first")
        parser.add_argument("--health-port", type=int, default=None, help="serve /livez, /readyz, /metrics here")
        parser.add_argument("--health-host", default=settings.ARCHIVE_HEALTH_HOST, help="address for --health-port")

    def handle(self, *args, queue_url: str, once: bool, setup: bool, health_port: int | None, health_host: str,
               **options) -> None:  # fmt: skip
        try:
            archive_poll_settings()
        except ValueError as error:
            raise CommandError(str(error)) from error
        control = ArchiverControl()
        storage = archive_storage()
        state: dict[str, str] = {}

        stop_on_signals(control)
        if health_port is not None:
            server = archiver_health_server(
                host=health_host, port=health_port, live=partial(_live, control), ready=partial(_ready, state, storage)
            )
            logger.info("archive health on http://%s:%s (/livez /readyz /metrics)", *server.server_address[:2])
        try:
            if setup:
                ensure = partial(
                    archive_queues_ensure,
                    name=settings.ARCHIVE_QUEUE_NAME,
                    max_receive_count=settings.ARCHIVE_MAX_RECEIVE_COUNT,
                    visibility_timeout=settings.VISIBILITY_TIMEOUT_SECONDS,
                )
                sqs_retrying(ensure, what="queue setup", control=control)
            queue_url = queue_url or sqs_retrying(archive_queue_url, what="queue lookup", control=control) or ""
            if queue_url:
                state["queue_url"] = queue_url
                logger.info("archive_emails polling %s into %s storage", queue_url, storage.label)
                archive_run(queue_url=queue_url, storage=storage, control=control, once=once)
        except StopRequested:
            pass
        logger.info("archive_emails stopped: %s", control.outcomes or "nothing handled")


def _live(control: ArchiverControl) -> tuple[bool, dict]:
    age = time.monotonic() - control.last_beat
    return age <= settings.ARCHIVE_HEARTBEAT_MAX_AGE, {"loop_age_seconds": round(age, 1)}


def _ready(state: dict[str, str], storage) -> tuple[bool, dict]:
    """The queue answers and the storage can be written."""
    details: dict[str, object] = {"storage": storage.label}
    queue_url = state.get("queue_url")
    if not queue_url:
        return False, {**details, "queue": "not found yet"}
    try:
        details["queue"] = archive_queue_depth(queue_url)
    except Exception as error:  # noqa: BLE001 - reported
        return False, {**details, "queue": f"unreachable: {error}"[:300]}
    try:
        storage.check()
    except Exception as error:  # noqa: BLE001 - reported
        return False, {**details, "storage_error": f"{type(error).__name__}: {error}"[:300]}
    return True, details
