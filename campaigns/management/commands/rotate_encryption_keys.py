"""Re-encrypts every stored SMTP password with the newest key in FIELD_ENCRYPTION_KEYS (the first one).

Run it after putting a new key first in FIELD_ENCRYPTION_KEYS; remove the old key only afterwards. Never
prints a password.
"""

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from campaigns.services.operations import account_passwords_rotate


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args, **options) -> None:
        try:
            count = account_passwords_rotate()
        except ImproperlyConfigured as error:
            raise CommandError(str(error)) from None
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted {count} SMTP passwords with the newest key."))
