"""Shows one lead: its progress, custom fields, recipients, and what was sent to each recipient at each step."""

from django.core.management.base import BaseCommand

from campaigns.management.tables import fields, object_or_error, table, when
from campaigns.models import Lead
from campaigns.selectors import lead_details


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("lead_id", type=int)

    def handle(self, *args, lead_id: int, **options) -> None:
        details = lead_details(lead=object_or_error(Lead, lead_id, "lead"))
        lead, campaign = details["lead"], details["campaign"]
        self.stdout.write(
            fields(
                [
                    ("Lead", lead.pk),
                    ("External id", lead.external_id),
                    ("Campaign", f"{campaign.pk} {campaign.name} ({campaign.status})"),
                    ("State", lead.state),
                    ("Stop reason", lead.stop_reason),
                    ("Current step", f"{lead.current_step} of {len(details['steps'])}"),
                    ("Sender", lead.sender_account.email if lead.sender_account else "not chosen yet (first email)"),
                    ("Last sent", when(lead.last_sent_at)),
                    ("Next due", when(lead.next_due_at)),
                ]
            )
        )
        if lead.custom_fields:
            self.stdout.write("\nCustom fields")
            self.stdout.write(table(["Field", "Value"], sorted(lead.custom_fields.items())))
        recipients = details["recipients"]
        self.stdout.write(f"\nRecipients ({len(recipients)})")
        self.stdout.write(
            table(
                ["Pos", "Email", "Name", "Company", "Status", "Last contacted", "Last step"],
                [
                    (r.position, r.email, r.name, r.company_name, r.status, r.last_contacted_at, r.last_step)
                    for r in (item["recipient"] for item in recipients)
                ],
            )
        )
        sends = [
            (item["recipient"].email, order, record.state, record.account, record.sent_at, record.attempts,
             record.last_error)
            for item in recipients
            for order, record in sorted(item["sends_by_step"].items())
        ]  # fmt: skip
        self.stdout.write(f"\nSends ({len(sends)})")
        if sends:
            self.stdout.write(table(["Recipient", "Step", "State", "Account", "Sent", "Attempts", "Last error"], sends))
        else:
            self.stdout.write("Nothing sent yet.")
