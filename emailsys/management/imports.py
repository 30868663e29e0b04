"""What the import commands of every app share: running a CSV import service on a file, listing the rows it
skipped, and a ValidationError as the text a command prints."""

from collections.abc import Callable
from typing import TextIO, TypeVar

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

Report = TypeVar("Report")


def validation_text(error: ValidationError) -> str:
    return "\n".join(error.messages)


def csv_file_import(path: str, importer: Callable[[TextIO], Report]) -> Report:
    """Runs a CSV import service on a UTF-8 file; what is wrong with the file as a whole is a CommandError."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return importer(handle)
    except OSError as error:
        raise CommandError(f"Cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise CommandError(f"{path} is not UTF-8 text; save it as CSV UTF-8.") from None
    except ValidationError as error:
        raise CommandError(validation_text(error)) from None


def import_errors_write(stdout, errors: list[tuple[int, str]]) -> None:
    """The rows an import skipped, by line; then exit status 1 if there were any."""
    for line, reason in errors:
        stdout.write(f"line {line}: {reason}")
    if errors:
        raise CommandError(f"{len(errors)} rows were not imported (listed above).", returncode=1)
