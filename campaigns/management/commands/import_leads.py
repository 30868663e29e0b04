"""Imports leads into a campaign from a CSV file.

Header: lead_id,email,name,first_name,last_name,company_name,website,provider (lead_id and email required;
other columns become custom lead fields). Rows with the same lead_id are one lead's recipients, in file
order. Importing the same file again creates nothing new and reports its rows unchanged. Bad rows (also a
line that is not UTF-8, holds a NUL byte or a value over 128 KiB) are listed with their line number and
skipped; the good rows are imported, and the command then exits with status 1.
"""

from audit.commands import OperatorCommand
from campaigns.management.tables import object_or_error
from campaigns.models import Campaign
from campaigns.services.imports import leads_import_csv
from emailsys.management.imports import csv_file_import, import_report_write


class Command(OperatorCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("campaign_id", type=int)
        parser.add_argument("file", help="CSV file (UTF-8)")

    def handle(self, *args, campaign_id: int, file: str, **options) -> None:
        campaign = object_or_error(Campaign, campaign_id, "campaign")
        report = csv_file_import(file, lambda handle: leads_import_csv(campaign=campaign, file=handle))
        import_report_write(self.stdout, f"Campaign {campaign.pk} recipients", report, leads=True)
