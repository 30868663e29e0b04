"""Imports leads into a campaign from a CSV file.

Header: lead_id,email,name,first_name,last_name,company_name,website,provider (lead_id and email required;
other columns become custom lead fields). Rows with the same lead_id are one lead's recipients, in file
order. Importing the same file again creates nothing new. Bad rows are listed with their line number and
skipped; the good rows are imported, and the command then exits with status 1.
"""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from campaigns.management.tables import object_or_error, validation_text
from campaigns.models import Campaign
from campaigns.services.imports import leads_import_csv


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("campaign_id", type=int)
        parser.add_argument("file", help="CSV file (UTF-8)")

    def handle(self, *args, campaign_id: int, file: str, **options) -> None:
        campaign = object_or_error(Campaign, campaign_id, "campaign")
        try:
            with open(file, encoding="utf-8-sig", newline="") as handle:
                report = leads_import_csv(campaign=campaign, file=handle)
        except OSError as error:
            raise CommandError(f"Cannot read {file}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise CommandError(f"{file} is not UTF-8 text; save it as CSV UTF-8.") from None
        except ValidationError as error:
            raise CommandError(validation_text(error)) from None
        self.stdout.write(
            f"Campaign {campaign.pk}: created {report.created} recipients ({report.leads_created} new leads), "
            f"updated {report.updated}."
        )
        for line, reason in report.errors:
            self.stdout.write(f"line {line}: {reason}")
        if report.errors:
            raise CommandError(f"{len(report.errors)} rows were not imported (listed above).", returncode=1)
