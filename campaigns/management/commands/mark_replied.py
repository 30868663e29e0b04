"""Records that a recipient replied: no further step goes to them and, with the campaign's stop_on_reply, their
lead stops. The address may be in several campaigns: --campaign-id narrows it."""

from django.core.management.base import CommandError
from django.utils.dateparse import parse_datetime

from audit.commands import OperatorCommand
from campaigns.models import Recipient
from campaigns.services.recipients import recipient_mark_replied


class Command(OperatorCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("email")
        parser.add_argument("--campaign-id", type=int)
        parser.add_argument("--at", help="when the reply came, ISO 8601 with offset (default: now)")

    def handle(self, *args, email: str, campaign_id: int | None, at: str | None, **options) -> None:
        replied_at = None
        if at is not None:
            replied_at = parse_datetime(at)
            if replied_at is None or replied_at.tzinfo is None:
                raise CommandError(f"--at {at!r} is not an ISO 8601 time with an offset, e.g. 2026-12-01T09:30+01:00")
        recipients = Recipient.objects.filter(email=email.strip().lower()).select_related("lead")
        if campaign_id is not None:
            recipients = recipients.filter(lead__campaign_id=campaign_id)
        if not recipients:
            where = f" in campaign {campaign_id}" if campaign_id is not None else ""
            raise CommandError(f"No recipient {email}{where}.")
        for recipient in recipients:
            marked = recipient_mark_replied(recipient=recipient, at=replied_at, source="marked with mark_replied")
            recipient.lead.refresh_from_db()
            state = f"lead {recipient.lead_id} is {recipient.lead.state}"
            self.stdout.write(f"{recipient.email} (lead {recipient.lead_id}): "
                              f"{'marked as replied' if marked else 'had already replied'}; {state}")  # fmt: skip
