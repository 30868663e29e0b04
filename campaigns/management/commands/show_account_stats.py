"""Shows sender account usage: today's reservations against the daily limit (today in each account's time
zone), when the account may send next (its min wait, or local midnight once the day's limit is used up), and
its sends by state, campaigns' and event mailings' alike. All accounts unless one id is given."""

from django.core.management.base import BaseCommand

from campaigns.management.tables import object_or_error, table
from campaigns.models import SenderAccount
from campaigns.selectors import account_list, account_stats
from emailsys import clock


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("account_id", type=int, nargs="?")

    def handle(self, *args, account_id: int | None, **options) -> None:
        if account_id is not None:
            accounts = [object_or_error(SenderAccount, account_id, "sender account")]
        else:
            accounts = list(account_list())
        if not accounts:
            self.stdout.write("No sender accounts yet.")
            return
        now = clock.now()
        rows = []
        for account in accounts:
            stats = account_stats(account=account, now=now)
            sends, next_at = stats["sends"], stats["next_available_at"] or "now"
            rows.append(
                (account.pk, account.email, account.status, f"{stats['reserved_today']}/{stats['daily_limit']}",
                 stats["remaining_today"], stats["sent_today"], next_at,
                 sends["sent"], sends["failed"], sends["bounced"], sends["unknown"], stats["last_sent_at"])
            )  # fmt: skip
        headers = ["ID", "Email", "Status", "Today", "Remaining", "Sent today", "Next available", "Sent", "Failed",
                   "Bounced", "Unknown", "Last sent"]  # fmt: skip
        self.stdout.write(table(headers, rows))
