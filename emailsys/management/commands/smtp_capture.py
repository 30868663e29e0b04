"""Runs the local SMTP capture server: accepts every message and stores it as an .eml file (see /captured/).

For development and the demo only; it never relays anything anywhere. aiosmtpd is a demo requirement
(requirements-demo.txt), not in the production image: there the command says so instead of failing on the import.
"""

import signal
import threading
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from emailsys.mail_capture import MailCaptureHandler


class Command(BaseCommand):
    help = __doc__
    requires_system_checks = []

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=1025)
        parser.add_argument("--directory", default=str(settings.MAIL_CAPTURE_DIR), help="where .eml files are written")

    def handle(self, *args, host: str, port: int, directory: str, **options) -> None:
        try:
            from aiosmtpd.controller import Controller
        except ImportError as error:
            raise CommandError(
                "smtp_capture needs aiosmtpd: pip install -r requirements-demo.txt (demo only)"
            ) from error
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        controller = Controller(MailCaptureHandler(Path(directory)), hostname=host, port=port)
        controller.start()
        self.stdout.write(f"SMTP capture listening on {host}:{port}, writing to {directory}", ending="\n")
        self.stdout.flush()
        try:
            stop.wait()
        finally:
            controller.stop()
