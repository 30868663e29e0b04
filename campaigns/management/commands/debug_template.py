"""Renders a campaign step as it would be sent (a threaded step with its `Re:` subject) for one lead's
recipients, or without --lead-id for the campaign's first lead (sample values for every variable if it has
none), and prints whom it rendered for, the subject, the text and HTML parts, the variables the template saw and
those that render empty. A template that cannot render prints its error. Sends nothing, records nothing."""

from django.core.management.base import BaseCommand, CommandError

from campaigns.management.tables import object_or_error
from campaigns.models import Campaign, Lead, SenderAccount
from campaigns.services.previews import preview_recipient, step_preview
from campaigns.services.templating import template_context


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("campaign_id", type=int)
        parser.add_argument("--lead-id", type=int, help="render for this lead's recipients")
        parser.add_argument("--step", type=int, help="step order (default: the lead's current step, or 1)")
        parser.add_argument("--account-id", type=int, help="sender account (default: the campaign's first)")

    def handle(self, *args, campaign_id: int, lead_id: int | None, step: int | None, account_id: int | None,
               **options) -> None:  # fmt: skip
        campaign = object_or_error(Campaign, campaign_id, "campaign")
        lead = object_or_error(Lead, lead_id, "lead", Lead.objects.filter(campaign=campaign)) if lead_id else None
        order = step or (lead.current_step if lead else 1)
        sequence_step = campaign.steps.select_related("template", "campaign").filter(order=order).first()
        if sequence_step is None:
            raise CommandError(f"Campaign {campaign.id} has no step {order}")
        if account_id:
            account = object_or_error(SenderAccount, account_id, "account")
        else:
            account = campaign.accounts.order_by("id").first()
            if account is None:
                raise CommandError(f"Campaign {campaign.id} has no sender account; pass --account-id")
        recipients = list(lead.recipients.order_by("position")) if lead else []
        if recipients:
            targets = [(recipient, f"lead {lead.id}'s recipient {recipient.position}") for recipient in recipients]
        else:
            targets = [preview_recipient(step=sequence_step, lead=lead)]
        for recipient, rendered_for in targets:
            context = template_context(recipient=recipient, account=account, campaign=campaign, step_order=order,
                                       custom_fields=recipient.lead.custom_fields)  # fmt: skip
            self.stdout.write(
                f"=== step {order} for {recipient.email} via {account.email}, rendered for {rendered_for}"
            )
            self.stdout.write("variables: " + ", ".join(f"{k}={v!r}" for k, v in sorted(context.items())))
            preview = step_preview(step=sequence_step, recipient=recipient, account=account)
            if preview.rendered is None:
                self.stdout.write(self.style.ERROR(preview.error))
                continue
            if preview.empty_variables:
                self.stdout.write(self.style.WARNING(f"renders empty: {', '.join(preview.empty_variables)}"))
            rendered = preview.rendered
            self.stdout.write(f"Subject: {rendered.subject}\n--- text ---\n{rendered.text}")
            self.stdout.write(f"--- html ---\n{rendered.html}")
