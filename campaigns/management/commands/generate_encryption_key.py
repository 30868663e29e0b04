"""Prints a new Fernet key for FIELD_ENCRYPTION_KEYS (which encrypts secrets at rest: SMTP passwords, ESP secrets).

To rotate: put the new key first in FIELD_ENCRYPTION_KEYS (comma-separated, newest first), restart, run
rotate_encryption_keys, then remove the old key.
"""

from cryptography.fernet import Fernet
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = __doc__
    requires_system_checks = []

    def handle(self, *args, **options) -> None:
        self.stdout.write(Fernet.generate_key().decode())
