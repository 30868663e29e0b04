"""Re-encrypts every encrypted field of every model (SMTP passwords, ESP secrets, ...) with the newest key in
FIELD_ENCRYPTION_KEYS (the first one), and prints how many values of each field it re-encrypted.

Run it after putting a new key first in FIELD_ENCRYPTION_KEYS; remove the old key only afterwards. Never
prints a secret.
"""

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from emailsys.crypto import encrypted_fields_rotate


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args, **options) -> None:
        try:
            counts = encrypted_fields_rotate()
        except ImproperlyConfigured as error:
            raise CommandError(str(error)) from None
        for field, count in counts.items():
            self.stdout.write(f"{field}: {count} re-encrypted")
        self.stdout.write(self.style.SUCCESS(f"Every encrypted field uses the newest key ({len(counts)} fields)."))
