"""Never send to an address, or to anyone at a domain: `suppress jane@example.com`, `suppress example.com`.
Adding the same value again changes nothing."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from campaigns.services.suppressions import suppression_add
from emailsys.management.imports import validation_text


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("value", help="an email address or a domain")
        parser.add_argument("--reason", default="", help="Why (shown in the admin), up to 200 characters.")

    def handle(self, *args, value: str, reason: str, **options) -> None:
        try:
            suppression = suppression_add(value=value, reason=reason)
        except ValidationError as error:
            raise CommandError(validation_text(error)) from None
        self.stdout.write(self.style.SUCCESS(f"Suppressed {suppression.kind} {suppression.value}."))
