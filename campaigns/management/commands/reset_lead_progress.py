"""Starts one lead over at step 1, due now. Sent emails stay recorded and are never sent twice; failed,
skipped and deferred attempts are forgotten so they are tried again. Bounced and unsubscribed recipients
keep their status.

A lead of a completed campaign is refused (the campaign sends nothing, so the lead would never be sent) unless
--reactivate is given, which makes the campaign active again. A paused or draft campaign's lead waits until the
campaign is active."""

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from audit.commands import OperatorCommand
from campaigns.management.tables import object_or_error
from campaigns.models import Campaign, Lead
from campaigns.services.lifecycle import lead_reset_progress
from emailsys.management.imports import validation_text


class Command(OperatorCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("lead_id", type=int)
        parser.add_argument(
            "--reactivate", action="store_true", help="If the lead's campaign is completed, make it active again."
        )

    def handle(self, *args, lead_id: int, reactivate: bool, **options) -> None:
        lead = object_or_error(Lead, lead_id, "lead")
        before = lead.campaign.status
        try:
            lead = lead_reset_progress(lead=lead, reactivate=reactivate)
        except ValidationError as error:
            raise CommandError(validation_text(error)) from None
        self.stdout.write(self.style.SUCCESS(f"Lead {lead.pk} reset: step {lead.current_step}, {lead.state}, due now."))
        campaign = Campaign.objects.get(pk=lead.campaign_id)
        if campaign.status != before:
            self.stdout.write(f"Campaign {campaign.pk} {campaign.name} reactivated: {before} → {campaign.status}.")
        elif campaign.status != Campaign.Status.ACTIVE:
            self.stdout.write(
                f"Note: campaign {campaign.pk} is {campaign.status}; the lead is sent once the campaign is active."
            )
