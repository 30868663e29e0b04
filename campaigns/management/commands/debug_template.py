"""Renders a campaign step for one lead's recipients (or with the templates' defaults) and prints the subject,
the text and HTML parts, and the variables the template saw. Sends nothing, records nothing."""

from django.core.management.base import BaseCommand, CommandError

from campaigns.management.tables import object_or_error
from campaigns.models import Campaign, Lead, Recipient, SenderAccount
from campaigns.services.templating import TemplateRenderError, template_context, template_render


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
        sequence_step = campaign.steps.select_related("template").filter(order=order).first()
        if sequence_step is None:
            raise CommandError(f"Campaign {campaign.id} has no step {order}")
        if account_id:
            account = object_or_error(SenderAccount, account_id, "account")
        else:
            account = campaign.accounts.order_by("id").first()
            if account is None:
                raise CommandError(f"Campaign {campaign.id} has no sender account; pass --account-id")
        recipients = list(lead.recipients.order_by("position")) if lead else [Recipient(email="someone@example.com")]
        custom_fields = lead.custom_fields if lead else {}
        for recipient in recipients:
            context = template_context(recipient=recipient, account=account, campaign=campaign, step_order=order,
                                       custom_fields=custom_fields)  # fmt: skip
            self.stdout.write(f"=== step {order} for {recipient.email} via {account.email}")
            self.stdout.write("variables: " + ", ".join(f"{k}={v!r}" for k, v in sorted(context.items())))
            try:
                template = sequence_step.template
                rendered = template_render(template=template, context=context, signature=account.signature)
            except TemplateRenderError as error:
                self.stdout.write(self.style.ERROR(f"template error: {error}"))
                continue
            self.stdout.write(f"Subject: {rendered.subject}\n--- text ---\n{rendered.text}")
            self.stdout.write(f"--- html ---\n{rendered.html}")
