"""What every CSV import shares: reading and checking its header, and the report it returns."""

import csv
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError


@dataclass
class ImportReport:
    """created/updated count recipients (one per CSV row); errors are (line number, reason), header = line 1."""

    created: int = 0
    updated: int = 0
    leads_created: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


def csv_header_read(reader: csv.DictReader, *, required: tuple[str, ...], example: str) -> list[str]:
    """The header's column names, stripped (the reader uses them from now on); a ValidationError saying what
    is wrong with an empty header, a missing required column or a repeated one. `example` shows a header."""
    header = [name.strip() for name in reader.fieldnames or []]
    if not any(header):
        raise ValidationError(f"The CSV file is empty; its first line must be the header ({example}).")
    missing = [name for name in required if name not in header]
    if missing:
        names = " and ".join(f"'{name}'" for name in missing)
        raise ValidationError(f"The CSV header has no {names} column (found: {', '.join(header)}).")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise ValidationError(f"The CSV header names {', '.join(duplicates)} more than once.")
    reader.fieldnames = header
    return header
