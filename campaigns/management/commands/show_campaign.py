"""Shows a campaign's settings, its sequence steps and the sender accounts it uses (with its own limits)."""

from django.core.management.base import BaseCommand

from campaigns.management.tables import duration, fields, object_or_error, table, when
from campaigns.models import Campaign
from campaigns.selectors import campaign_details

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("campaign_id", type=int)

    def handle(self, *args, campaign_id: int, **options) -> None:
        details = campaign_details(campaign=object_or_error(Campaign, campaign_id, "campaign"))
        campaign, steps, settings = details["campaign"], details["steps"], details["account_settings"]
        days = ", ".join(WEEKDAYS[day] for day in sorted(campaign.send_days)) or "every day"
        hours = (
            f"{campaign.send_hour_start:02d}:00-{campaign.send_hour_end:02d}:00"
            if campaign.send_hour_start is not None
            else "all day"
        )
        self.stdout.write(
            fields(
                [
                    ("Campaign", f"{campaign.pk} {campaign.name}"),
                    ("Status", campaign.status),
                    ("Time zone", campaign.time_zone),
                    ("Batch size", campaign.batch_size),
                    ("Sends on", f"{days}, {hours} ({campaign.time_zone})"),
                    ("Starts", when(campaign.starts_at)),
                    ("Ends", when(campaign.ends_at)),
                    ("Created", when(campaign.created_at)),
                ]
            )
        )
        self.stdout.write(f"\nSteps ({len(steps)})")
        self.stdout.write(
            table(
                ["Order", "Delay", "Threaded", "Template", "Subject"],
                [(s.order, duration(s.delay_seconds), s.threaded, s.template.name, s.template.subject) for s in steps],
            )
        )
        self.stdout.write(f"\nAccounts ({len(settings)})")
        self.stdout.write(
            table(
                ["ID", "Email", "Status", "Daily limit", "Min wait (s)", "Reserved today"],
                [
                    (
                        s.account_id,
                        s.account.email,
                        s.account.status,
                        s.daily_limit if s.daily_limit is not None else f"{s.account.daily_limit} (account)",
                        s.min_wait_seconds
                        if s.min_wait_seconds is not None
                        else f"{s.account.min_wait_seconds} (account)",
                        s.usage_reserved,
                    )
                    for s in settings
                ],
            )  # fmt: skip
        )
