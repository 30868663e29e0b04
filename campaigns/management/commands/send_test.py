"""Sends one step of a campaign to an address of your choice, marked as a test ("[TEST]" subject, an
X-Emailsys-Test header), rendered for --lead-id's first recipient, else the campaign's first lead's, else with
sample values for every variable; it says which, and which variables render empty. It never counts as any
recipient's email and uses no daily limit."""

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.core.validators import validate_email

from audit.commands import OperatorCommand
from campaigns.management.tables import object_or_error
from campaigns.models import Campaign, Lead, SenderAccount
from campaigns.services.previews import step_send_test


class Command(OperatorCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("campaign_id", type=int)
        parser.add_argument("--to", required=True, help="the address to send the test to")
        parser.add_argument("--step", type=int, default=1, help="step order (default 1)")
        parser.add_argument("--account-id", type=int, help="sender account (default: the campaign's first)")
        parser.add_argument("--lead-id", type=int, help="render for this lead's first recipient")

    def handle(self, *args, campaign_id: int, to: str, step: int, account_id: int | None, lead_id: int | None,
               **options) -> None:  # fmt: skip
        try:
            validate_email(to)
        except ValidationError:
            raise CommandError(f"--to {to!r} is not an email address") from None
        campaign = object_or_error(Campaign, campaign_id, "campaign")
        sequence_step = campaign.steps.filter(order=step).first()
        if sequence_step is None:
            raise CommandError(f"Campaign {campaign.id} has no step {step}")
        account = (object_or_error(SenderAccount, account_id, "account") if account_id
                   else campaign.accounts.order_by("id").first())  # fmt: skip
        if account is None:
            raise CommandError(f"Campaign {campaign.id} has no sender account; pass --account-id")
        lead = object_or_error(Lead, lead_id, "lead", Lead.objects.filter(campaign=campaign)) if lead_id else None
        result = step_send_test(step=sequence_step, to_email=to, account=account, lead=lead)
        if result.test.error:
            raise CommandError(f"test send failed: {result.test.error} ({result.note})")
        self.stdout.write(self.style.SUCCESS(f"sent step {step} to {to} via {account.email}: {result.test.subject}"))
        self.stdout.write(result.note)
