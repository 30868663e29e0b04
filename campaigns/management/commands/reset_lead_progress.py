"""Starts one lead over at step 1, due now. Sent emails stay recorded and are never sent twice; failed,
skipped and deferred attempts are forgotten so they are tried again. Bounced and unsubscribed recipients
keep their status."""

from django.core.management.base import BaseCommand

from campaigns.management.tables import object_or_error
from campaigns.models import Lead
from campaigns.services.lifecycle import lead_reset_progress


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("lead_id", type=int)

    def handle(self, *args, lead_id: int, **options) -> None:
        lead = lead_reset_progress(lead=object_or_error(Lead, lead_id, "lead"))
        self.stdout.write(self.style.SUCCESS(f"Lead {lead.pk} reset: step {lead.current_step}, {lead.state}, due now."))
