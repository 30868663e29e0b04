"""Lists all campaigns, newest first, with their steps, accounts and leads."""

from django.core.management.base import BaseCommand

from campaigns.management.tables import table
from campaigns.selectors import campaign_list


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args, **options) -> None:
        campaigns = list(campaign_list())
        if not campaigns:
            self.stdout.write("No campaigns yet (import_campaign creates one).")
            return
        rows = [
            (c.pk, c.name, c.status, c.step_count, c.account_count, c.lead_count, c.leads_in_progress, c.created_at)
            for c in campaigns
        ]
        self.stdout.write(table(["ID", "Name", "Status", "Steps", "Accounts", "Leads", "In progress", "Created"], rows))
