"""Imports contacts (the audience of event mailings) from a CSV file.

Header: email,name,language,subscribed,attributes (email required, the rest optional, any order). language is
a code such as en, fr or pt-br (default en); subscribed is yes/no (default yes); attributes is a JSON object,
e.g. {"registered": ["VT2025"], "vip": true}. Any other column becomes a text attribute named after it.
Contacts match on email, case-insensitively: importing again never duplicates; empty cells change nothing,
attributes are merged, and an import never resubscribes a contact who unsubscribed. Bad rows (also a line
that is not UTF-8, holds a NUL byte or a value over 128 KiB) are listed with their line number and skipped;
the good rows are imported, and the command then exits with status 1.
"""

from audit.commands import OperatorCommand
from emailsys.management.imports import csv_file_import, import_report_write
from workorders.services.contacts import contacts_import_csv


class Command(OperatorCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="CSV file (UTF-8)")

    def handle(self, *args, file: str, **options) -> None:
        report = csv_file_import(file, lambda handle: contacts_import_csv(file=handle))
        import_report_write(self.stdout, "Contacts", report)
