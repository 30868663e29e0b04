"""Never send to an address, or to anyone at a domain: `suppress jane@example.com`, `suppress example.com`.
Adding the same value again changes nothing, and says so (with the reason and date it was suppressed)."""

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from audit.commands import OperatorCommand
from campaigns.models import Suppression
from campaigns.services.suppressions import suppression_ensure
from emailsys.management.imports import validation_text


class Command(OperatorCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("value", help="an email address or a domain")
        parser.add_argument("--reason", default="", help="Why (shown in the admin), up to 200 characters.")

    def handle(self, *args, value: str, reason: str, **options) -> None:
        try:
            suppression, created = suppression_ensure(value=value, reason=reason)
        except ValidationError as error:
            raise CommandError(validation_text(error)) from None
        if created:
            self.stdout.write(self.style.SUCCESS(f"Suppressed {suppression.kind} {suppression.value}."))
        else:
            why = f", reason: {suppression.reason}" if suppression.reason else ""
            self.stdout.write(
                f"Already suppressed: {suppression.kind} {suppression.value} "
                f"(since {suppression.created_at:%Y-%m-%d}{why}); nothing changed."
            )
        if suppression.kind == Suppression.Kind.ADDRESS:
            domain = suppression.value.rpartition("@")[2]
            if Suppression.objects.filter(kind=Suppression.Kind.DOMAIN, value=domain).exists():
                self.stdout.write(f"Note: the whole domain {domain} is suppressed too.")
