"""Imports contacts (the audience of event mailings) from a CSV file.

Header: email,name,language,subscribed,attributes (email required, the rest optional, any order). language is
a code such as en, fr or pt-br (default en); subscribed is yes/no (default yes); attributes is a JSON object,
e.g. {"registered": ["VT2025"], "vip": true}. Any other column becomes a text attribute named after it.
Contacts match on email, case-insensitively: importing again never duplicates; empty cells change nothing,
attributes are merged, and an import never resubscribes a contact who unsubscribed. Bad rows are listed
with their line number and skipped; the good rows are imported, and the command then exits with status 1.
"""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from campaigns.management.tables import validation_text
from workorders.services.contacts import contacts_import_csv


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="CSV file (UTF-8)")

    def handle(self, *args, file: str, **options) -> None:
        try:
            with open(file, encoding="utf-8-sig", newline="") as handle:
                report = contacts_import_csv(file=handle)
        except OSError as error:
            raise CommandError(f"Cannot read {file}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise CommandError(f"{file} is not UTF-8 text; save it as CSV UTF-8.") from None
        except ValidationError as error:
            raise CommandError(validation_text(error)) from None
        self.stdout.write(
            f"Contacts: created {report.created}, updated {report.updated}, unchanged {report.unchanged}."
        )
        for line, reason in report.errors:
            self.stdout.write(f"line {line}: {reason}")
        if report.errors:
            raise CommandError(f"{len(report.errors)} rows were not imported (listed above).", returncode=1)
