"""Makes a sender account available now: today's usage and its per-campaign usage back to 0, waits and the
failure count cleared. Use it when a limit was used up by mistake; the account's status is not changed. Work
orders sleeping because the account could not send are woken and go on sending."""

from audit.commands import OperatorCommand
from campaigns.management.tables import object_or_error
from campaigns.models import SenderAccount
from campaigns.services.accounts import account_reset_limits


class Command(OperatorCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("account_id", type=int)

    def handle(self, *args, account_id: int, **options) -> None:
        account = object_or_error(SenderAccount, account_id, "sender account")
        woken = account_reset_limits(account=account)
        self.stdout.write(self.style.SUCCESS(f"Limits of account {account.pk} {account.email} reset: available now."))
        if woken:
            self.stdout.write(f"Woke work order(s) {', '.join(map(str, woken))}, waiting on this account.")
        if account.status != SenderAccount.Status.ACTIVE:
            self.stdout.write(f"Note: the account is {account.status}; it sends only once it is active again.")
