"""Sets the status of every recipient in a campaign (e.g. --status contacted). Bounced and unsubscribed
recipients keep their status."""

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from audit.commands import OperatorCommand
from campaigns.management.tables import object_or_error
from campaigns.models import Campaign
from campaigns.services.recipients import leads_bulk_update_status
from emailsys.management.imports import validation_text


class Command(OperatorCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("--campaign-id", type=int, required=True)
        parser.add_argument("--status", required=True, help="not_contacted, contacted, replied, bounced, unsubscribed")

    def handle(self, *args, campaign_id: int, status: str, **options) -> None:
        campaign = object_or_error(Campaign, campaign_id, "campaign")
        try:
            count = leads_bulk_update_status(campaign=campaign, status=status)
        except ValidationError as error:
            raise CommandError(validation_text(error)) from None
        self.stdout.write(self.style.SUCCESS(f"Set {count} recipients of campaign {campaign.pk} to {status}."))
