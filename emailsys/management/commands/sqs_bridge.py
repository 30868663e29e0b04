"""Long-polls the event bus's SQS FIFO queue, records each message as a received event in PostgreSQL (once per
outbox id) and dispatches it to its stream's Celery pool when it is next for its key; a message is deleted from
SQS only after its record is committed. Run as many as you like: SQS FIFO hands a message group (one key) to one
receiver at a time, and the database decides what runs.

SIGTERM or SIGINT: the message in hand is finished, then the bridge exits 0 (a long poll in progress is dropped;
SQS shows what it returned again after the visibility timeout)."""

import logging
from functools import partial

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from emailsys.eventbus import BridgeControl, StopRequested, sqs_bridge_run, sqs_retrying, stop_on_signals
from emailsys.sqs import sqs_queue_url, sqs_queues_ensure

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("--queue-url", default="", help="default: SQS_QUEUE_URL, or SQS_QUEUE_NAME looked up")
        parser.add_argument("--wait-seconds", type=int, default=settings.SQS_WAIT_SECONDS, help="long-poll wait")
        parser.add_argument("--once", action="store_true", help="one receive (up to 10 messages), then exit")
        parser.add_argument("--setup", action="store_true", help="create the queues first, as sqs_setup (demo)")

    def handle(self, *args, queue_url: str, wait_seconds: int, once: bool, setup: bool, **options) -> None:
        if not (queue_url or settings.SQS_QUEUE_URL or settings.SQS_QUEUE_NAME):
            raise CommandError("SQS is not configured: set SQS_QUEUE_NAME (or SQS_QUEUE_URL), or pass --queue-url")
        control = BridgeControl()

        stop_on_signals(control)
        try:
            if setup:
                ensure = partial(
                    sqs_queues_ensure,
                    name=settings.SQS_QUEUE_NAME,
                    max_receive_count=settings.SQS_MAX_RECEIVE_COUNT,
                    visibility_timeout=settings.SQS_VISIBILITY_TIMEOUT,
                )
                sqs_retrying(ensure, what="queue setup", control=control)
            queue_url = queue_url or sqs_retrying(sqs_queue_url, what="queue lookup", control=control)
            logger.info("sqs_bridge polling %s", queue_url)
            sqs_bridge_run(queue_url=queue_url, wait_seconds=wait_seconds, once=once, control=control)
        except StopRequested:
            pass
        logger.info("sqs_bridge stopped after %s messages", control.handled)
