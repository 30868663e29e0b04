"""Creates the event bus's SQS FIFO queue and its dead-letter queue (`<name>-dlq.fifo`) with the redrive policy
(SQS_MAX_RECEIVE_COUNT receives), or updates them; prints both URLs. Safe to run again."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from emailsys.sqs import sqs_queues_ensure


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("--queue-name", default=settings.SQS_QUEUE_NAME, help="default: SQS_QUEUE_NAME")
        parser.add_argument("--max-receive-count", type=int, default=settings.SQS_MAX_RECEIVE_COUNT)
        parser.add_argument("--visibility-timeout", type=int, default=settings.SQS_VISIBILITY_TIMEOUT)

    def handle(self, *args, queue_name: str, max_receive_count: int, visibility_timeout: int, **options) -> None:
        if not queue_name:
            raise CommandError("no queue name: set SQS_QUEUE_NAME or pass --queue-name")
        try:
            url, dead_letter_url = sqs_queues_ensure(
                name=queue_name, max_receive_count=max_receive_count, visibility_timeout=visibility_timeout
            )
        except ValueError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(f"queue {url}\ndead-letter queue {dead_letter_url}")
