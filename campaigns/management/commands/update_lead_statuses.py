"""Rebuilds every recipient's status, last contact time and last step from the send records: sent means
contacted, a bounce means bounced. Replied, unsubscribed and bounced recipients keep their status."""

from django.core.management.base import BaseCommand

from campaigns.management.tables import object_or_error
from campaigns.models import Campaign
from campaigns.services.recipients import recipients_update_statuses


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("--campaign-id", type=int, help="Only this campaign's recipients.")

    def handle(self, *args, campaign_id: int | None, **options) -> None:
        campaign = object_or_error(Campaign, campaign_id, "campaign") if campaign_id is not None else None
        changed = recipients_update_statuses(campaign=campaign)
        scope = f" in campaign {campaign.pk}" if campaign else ""
        self.stdout.write(self.style.SUCCESS(f"Updated {changed} recipients{scope}."))
