"""Lists the leads whose next step is due now (in-progress leads of active campaigns), the longest waiting
first. Send windows and account limits may still hold them back; run_dispatcher decides. When none is due, says
for each active campaign (or the one asked for) when its next send is and why not now (`campaign_next_send`)."""

from django.core.management.base import BaseCommand

from campaigns.management.tables import object_or_error, table
from campaigns.models import Campaign
from campaigns.selectors import lead_list_due
from campaigns.services.schedule import campaign_next_send
from emailsys import clock


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("--campaign-id", type=int, help="Only this campaign's leads.")
        parser.add_argument("--limit", type=int, default=100, help="Show at most this many (default 100).")

    def handle(self, *args, campaign_id: int | None, limit: int, **options) -> None:
        if campaign_id is not None:
            object_or_error(Campaign, campaign_id, "campaign")
        now = clock.now()
        leads = list(lead_list_due(now=now, campaign_id=campaign_id, limit=limit).prefetch_related("recipients"))
        more = " (limit reached; --limit shows more)" if len(leads) == limit else ""
        self.stdout.write(f"Found {len(leads)} due leads{more}.")
        if not leads:
            campaigns = (
                Campaign.objects.filter(pk=campaign_id)
                if campaign_id is not None
                else Campaign.objects.filter(status=Campaign.Status.ACTIVE)
            )
            for campaign in campaigns.order_by("id"):
                next_send = campaign_next_send(campaign=campaign, now=now)
                self.stdout.write(f"Campaign {campaign.pk} {campaign.name}: {next_send.summary(campaign.time_zone)}")
        if leads:
            rows = [
                (lead.pk, lead.external_id, f"{lead.campaign_id} {lead.campaign.name}", lead.current_step,
                 lead.next_due_at, len(lead.recipients.all()))
                for lead in leads
            ]  # fmt: skip
            self.stdout.write(table(["Lead", "External id", "Campaign", "Step", "Due since", "Recipients"], rows))
