"""What the import commands of every app share: running a CSV import service on a file, printing its report
and the rows it skipped, and a ValidationError as the text a command prints."""

from collections.abc import Callable
from typing import IO

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from emailsys.imports import ImportReport


def validation_text(error: ValidationError) -> str:
    return "\n".join(error.messages)


def csv_file_import(path: str, importer: Callable[[IO[bytes]], ImportReport]) -> ImportReport:
    """Runs a CSV import service on a file, opened as bytes: the service decodes it line by line, so a line
    that is not UTF-8 is that row's error, not the file's. What is wrong with the file as a whole (it cannot be
    read, its header is unusable) is a CommandError."""
    try:
        with open(path, "rb") as handle:
            return importer(handle)
    except OSError as error:
        raise CommandError(f"Cannot read {path}: {error.strerror}") from None
    except ValidationError as error:
        raise CommandError(f"{path} was not imported: {validation_text(error)}") from None


def import_report_write(stdout, label: str, report: ImportReport, *, leads: bool = False) -> None:
    """The report's counts after `label` (with `leads`, the leads' too); then the rows it skipped, by line, and
    exit status 1 if there were any."""
    text = (
        f"{label}: created {report.created}, updated {report.updated}, unchanged {report.unchanged}, "
        f"skipped {report.skipped}"
    )
    if leads:
        text += f"; leads: {report.leads_created} new, {report.leads_updated} with custom fields updated"
    stdout.write(text + ".")
    for line, reason in report.errors:
        stdout.write(f"line {line}: {reason}")
    if report.errors:
        raise CommandError(f"{len(report.errors)} rows were not imported (listed above).", returncode=1)
