"""Sends test messages to the archive queue in the seed's shape (the seed's test_processor.py): each with its
own sender and a timestamp a few seconds apart, so they land on distinct keys."""

import json
import time

from django.core.management.base import BaseCommand, CommandError

from archive.services import archive_message_send, archive_queue_url


def archive_test_bodies(*, count: int, start: int | None = None) -> list[str]:
    """`count` bodies with the four email_* fields at the top level, as the seed's producer sends them."""
    start = int(time.time()) if start is None else start
    return [
        json.dumps({
            "email_subject": f"Test email {number}",
            "email_sender": f"test.sender{number % 5}@example.com",
            "email_timestream": str(start + number),
            "email_content": f"This is test email number {number}, sent by archive_send_test.",
        })
        for number in range(count)
    ]  # fmt: skip


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("--count", type=int, default=5, help="messages to send (default 5)")
        parser.add_argument("--queue-url", default="", help="default: ARCHIVE_QUEUE_URL, or ARCHIVE_QUEUE_NAME")

    def handle(self, *args, count: int, queue_url: str, **options) -> None:
        if count < 1:
            raise CommandError("--count must be at least 1")
        try:
            url = queue_url or archive_queue_url()
        except Exception as error:  # noqa: BLE001 - a clear message, not a traceback
            raise CommandError(f"archive queue not found (run archive_emails --setup first?): {error}") from error
        for body in archive_test_bodies(count=count):
            archive_message_send(body=body, queue_url=url)
        self.stdout.write(f"sent {count} test message(s) to {url}")
