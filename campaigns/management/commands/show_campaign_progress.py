"""Shows where a campaign stands: leads by state and step, recipients by status, sends by state, sent today."""

from django.core.management.base import BaseCommand

from campaigns.management.tables import object_or_error, table
from campaigns.models import Campaign
from campaigns.selectors import campaign_progress


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("campaign_id", type=int)

    def handle(self, *args, campaign_id: int, **options) -> None:
        progress = campaign_progress(campaign=object_or_error(Campaign, campaign_id, "campaign"))
        campaign, leads = progress["campaign"], progress["leads"]
        self.stdout.write(f"Campaign {campaign.pk} {campaign.name} ({campaign.status})")
        self.stdout.write(f"Sent today ({campaign.time_zone}): {progress['sent_today']}\n")
        self.stdout.write(table(["Leads", "Count"], [(name.replace("_", " "), n) for name, n in leads.items()]))
        self.stdout.write("")
        self.stdout.write(table(["Current step", "Leads"], sorted(progress["leads_by_step"].items())))
        self.stdout.write("")
        self.stdout.write(table(["Recipient status", "Count"], progress["recipients"].items()))
        self.stdout.write("")
        self.stdout.write(table(["Send state", "Count"], progress["send_records"].items()))
