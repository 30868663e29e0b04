"""Connects to a sender account's SMTP server, secures the connection and logs in, then quits. Sends nothing.
Exit status 1 when it fails; the reason is printed (never the password)."""

from django.core.management.base import CommandError

from audit.commands import OperatorCommand
from campaigns.management.tables import object_or_error
from campaigns.models import SenderAccount
from campaigns.services.delivery import account_check


class Command(OperatorCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("account_id", type=int)
        parser.add_argument("--timeout", type=float, default=10)

    def handle(self, *args, account_id: int, timeout: float, **options) -> None:
        account = object_or_error(SenderAccount, account_id, "account")
        ok, detail = account_check(account=account, timeout=timeout)
        if not ok:
            raise CommandError(f"{account.email}: {detail}")
        self.stdout.write(self.style.SUCCESS(f"{account.email}: {detail}"))
