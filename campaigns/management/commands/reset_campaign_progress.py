"""Starts every lead of a campaign over at step 1, due now (asks first unless --yes).

Sent emails stay recorded and are never sent twice; failed, skipped and deferred attempts and dry runs are
forgotten so they are tried again. Bounced and unsubscribed recipients keep their status. A completed
campaign becomes paused; activate it to send again."""

from audit.commands import OperatorCommand
from campaigns.management.tables import object_or_error
from campaigns.models import Campaign
from campaigns.services.lifecycle import campaign_reset_progress


class Command(OperatorCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("campaign_id", type=int)
        parser.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")

    def handle(self, *args, campaign_id: int, yes: bool, **options) -> None:
        campaign = object_or_error(Campaign, campaign_id, "campaign")
        if not yes:
            leads = campaign.leads.count()
            self.stdout.write(
                f"Reset the progress of campaign {campaign.pk} {campaign.name!r} ({leads} leads)? "
                "Sent emails are kept and not sent again. Type 'yes' to continue: ",
                ending="",
            )
            self.stdout.flush()
            try:
                answer = input()
            except EOFError:
                answer = ""
            if answer.strip().lower() != "yes":
                self.stdout.write("Cancelled; nothing changed.")
                return
        count = campaign_reset_progress(campaign=campaign)
        self.stdout.write(
            self.style.SUCCESS(f"Reset {count} leads of campaign {campaign.pk}; status is {campaign.status}.")
        )
