"""Keeps an IMAP IDLE connection per enabled IMAP sender mailbox and enqueues a poll (processing.imap_poll, queue
inbound_backfill) when the server announces new mail. IDLE only wakes the poll; the poll reads from the stored
cursor. Reconnects with backoff; settings are re-read every --refresh seconds. SIGTERM or SIGINT: exits 0 within
about a second. Run one per deployment (a second one is harmless: polls take the mailbox's lease).

    manage.py imap_idle [--refresh SECONDS] [--mailbox ADDRESS ...]
"""

import signal

from django.core.management.base import BaseCommand, CommandParser

from processing.services.imap_idle import IdleSupervisor


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--refresh", type=float, default=30.0, help="seconds between reads of the settings")
        parser.add_argument("--mailbox", action="append", default=[], help="only this address (repeatable)")

    def handle(self, *args, refresh: float, mailbox: list[str], **options) -> None:
        supervisor = IdleSupervisor(refresh_seconds=refresh, addresses=mailbox)
        signal.signal(signal.SIGTERM, lambda signum, frame: supervisor.stop())
        signal.signal(signal.SIGINT, lambda signum, frame: supervisor.stop())
        self.stdout.write("imap_idle: watching enabled IMAP mailboxes", ending="\n")
        self.stdout.flush()
        supervisor.run()
