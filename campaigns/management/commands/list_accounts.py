"""Lists the sender accounts: SMTP server, status, limits and how many campaigns use each. Never shows a
password."""

from django.core.management.base import BaseCommand

from campaigns.management.tables import table
from campaigns.selectors import account_list


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args, **options) -> None:
        accounts = list(account_list())
        if not accounts:
            self.stdout.write("No sender accounts yet (add them in the admin).")
            return
        rows = [
            (a.pk, a.email, a.sender_name, a.provider, f"{a.smtp_host}:{a.smtp_port}", a.security, a.status,
             a.status_reason, a.daily_limit, a.min_wait_seconds, a.time_zone, a.campaign_count)
            for a in accounts
        ]  # fmt: skip
        headers = ["ID", "Email", "Sender name", "Provider", "SMTP server", "Security", "Status", "Reason",
                   "Daily limit", "Min wait (s)", "Time zone", "Campaigns"]  # fmt: skip
        self.stdout.write(table(headers, rows))
