"""What every CSV import shares: reading the file record by record, checking its header, and the report.

A file is refused as a whole only when its header is unusable. Everything wrong with one record — a byte that
is not UTF-8, a NUL byte, a value over `FIELD_LIMIT` characters, more values than the header has columns — is
that record's error, with its real line number (the header is line 1; a quoted value may span lines), and the
records after it are read as usual.
"""

import csv
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, TypeVar

from django.core.exceptions import ValidationError

# The longest value a CSV cell may hold (the csv module's default limit, 128 KiB). We check it per record
# ourselves, with the csv module's own limit raised, so that one long cell does not end the whole file.
FIELD_LIMIT = 131_072
T = TypeVar("T")
BOM = "\ufeff"
# One physical line and its ending: \r\n, \n or a lone \r (as text files opened with newline="" split them).
_LINE_TEXT = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")
_LINE_BYTES = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


@dataclass
class ImportReport:
    """One shape for every CSV import. Counts are per data row: `created` new rows, `updated` rows the file
    changed, `unchanged` rows it matched and left as they were; `errors` are the skipped rows as (line number,
    reason), header = line 1. `leads_created` and `leads_updated` count leads (the leads import only)."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    leads_created: int = 0
    leads_updated: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return len(self.errors)

    def counts(self) -> dict[str, int]:
        """The report's numbers (the audit trail records them, one entry per import)."""
        return {"created": self.created, "updated": self.updated, "unchanged": self.unchanged, "skipped": self.skipped,
                "leads_created": self.leads_created, "leads_updated": self.leads_updated}  # fmt: skip


@dataclass
class CsvRecord:
    """One data record: `line` is the physical line it starts on; `values` maps every header column to its
    value ("" when the row is short); `surplus` counts values beyond the header's columns."""

    line: int
    values: dict[str, str]
    surplus: int


class CsvRecords:
    """A CSV file (bytes or text; UTF-8, an Excel BOM is fine) read record by record; its header is read and
    checked on construction (a ValidationError for the file as a whole). Iterating yields the good records;
    each bad one goes into `errors` as (line, reason) and is skipped. Blank lines are skipped."""

    def __init__(self, file: IO[bytes] | IO[str], *, required: tuple[str, ...], example: str, errors: list) -> None:
        if csv.field_size_limit() < 2**31 - 1:
            csv.field_size_limit(2**31 - 1)  # process-wide; FIELD_LIMIT is enforced per record below
        self.errors = errors
        self._lines = 0
        self._bad_lines: dict[int, str] = {}
        self._reader = csv.reader(self._physical_lines(file))
        self.header = self._header_read(required=required, example=example)

    def __iter__(self) -> Iterator[CsvRecord]:
        while True:
            try:
                start, values = self._record_next()
            except StopIteration:
                return
            except csv.Error as error:  # not expected with our line splitting and limit; still one record's
                self.errors.append((self._lines, f"not valid CSV ({error})"))
                continue
            reason = self._record_problem(start, values)
            if reason is not None:
                self.errors.append(reason)
                continue
            width = len(self.header)
            padded = values[:width] + [""] * (width - len(values))
            yield CsvRecord(start, dict(zip(self.header, padded, strict=True)), max(0, len(values) - width))

    def parsed(self, parse: Callable[[CsvRecord], T]) -> Iterator[tuple[CsvRecord, T]]:
        """Each good record with what `parse` made of it. A record `parse` refuses (ValueError: its reason) or
        fails on in any other way is that line's error, and the rest go on."""
        for record in self:
            try:
                yield record, parse(record)
            except ValueError as error:
                self.errors.append((record.line, str(error)))
            except Exception as error:  # noqa: BLE001 - one row's surprise is that row's error, not the file's
                self.errors.append((record.line, f"could not be read ({type(error).__name__}: {error})"))

    def _physical_lines(self, file: Iterable) -> Iterator[str]:
        """Physical lines as text, counted; a line that is not UTF-8 or holds a NUL byte is noted in
        `_bad_lines` and handed on with the offending characters replaced, so the parser's quoting stays in
        step and the record it belongs to can be skipped."""
        for chunk in file:
            for raw in _lines_split(chunk):
                self._lines += 1
                if self._lines == 1:
                    raw = raw.removeprefix(b"\xef\xbb\xbf" if isinstance(raw, bytes) else BOM)
                text = raw
                if isinstance(raw, bytes):
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError as error:
                        column = len(raw[: error.start].decode("utf-8", errors="replace")) + 1
                        self._bad_lines[self._lines] = (
                            f"not UTF-8 text (byte 0x{raw[error.start]:02x} at character {column}); "
                            "save the file as CSV UTF-8"
                        )
                        text = raw.decode("utf-8", errors="replace")
                elif not text.isascii():
                    try:
                        text.encode("utf-8")
                    except UnicodeEncodeError as error:  # a lone surrogate: no database can store it
                        self._bad_lines[self._lines] = f"not text (character {error.start + 1} is a lone surrogate)"
                        text = text.encode("utf-8", errors="replace").decode("utf-8")
                if "\0" in text:
                    self._bad_lines.setdefault(
                        self._lines, f"contains a NUL byte (at character {text.index(chr(0)) + 1})"
                    )
                    text = text.replace("\0", "")
                yield text

    def _record_next(self) -> tuple[int, list[str]]:
        """The next non-blank record and the line it starts on."""
        while True:
            start = self._lines + 1
            values = next(self._reader)
            if values:
                return start, values
            self._bad_lines.pop(self._lines, None)  # a blank line is skipped whatever it held

    def _record_problem(self, start: int, values: list[str]) -> tuple[int, str] | None:
        end = self._lines
        bad = [line for line in range(start, end + 1) if line in self._bad_lines] if self._bad_lines else []
        if bad:
            return bad[0], self._bad_lines[bad[0]]
        if max(map(len, values)) <= FIELD_LIMIT:
            return None
        for index, value in enumerate(values):
            if len(value) > FIELD_LIMIT:
                column = self.header[index] if index < len(self.header) else f"value {index + 1}"
                reason = f"{column} is longer than {FIELD_LIMIT:,} characters ({len(value):,})"
                if end > start:
                    reason += f"; the record runs from line {start} to line {end} (a quote not closed?)"
                return start, reason
        return None

    def _header_read(self, *, required: tuple[str, ...], example: str) -> list[str]:
        try:
            _start, values = self._record_next()
        except StopIteration:
            values = []
        except csv.Error as error:
            raise ValidationError(f"Line 1: the header is not valid CSV ({error}).") from None
        if self._bad_lines:
            line, reason = next(iter(self._bad_lines.items()))
            raise ValidationError(f"Line {line} (the header): {reason}.")
        return csv_header_check([name.strip() for name in values], required=required, example=example)


def _lines_split(chunk: bytes | str) -> Iterable[bytes | str]:
    """A chunk of the file (what iterating it gives: up to a \n) as physical lines; a lone \r ends one too."""
    carriage = "\r" if isinstance(chunk, str) else b"\r"
    found = chunk.find(carriage)
    if found == -1 or found == len(chunk) - 1 or (found == len(chunk) - 2 and chunk[-1:] in ("\n", b"\n")):
        return (chunk,)  # the usual case, one line, spared the regular expression
    return (_LINE_BYTES if isinstance(chunk, bytes) else _LINE_TEXT).findall(chunk)


def csv_header_check(header: list[str], *, required: tuple[str, ...], example: str) -> list[str]:
    """The header's column names, stripped; a ValidationError saying what is wrong with an empty header, a
    missing required column or a repeated one. `example` shows a header."""
    if not any(header):
        raise ValidationError(f"The CSV file is empty; its first line must be the header ({example}).")
    missing = [name for name in required if name not in header]
    if missing:
        names = " and ".join(f"'{name}'" for name in missing)
        raise ValidationError(f"The CSV header has no {names} column (found: {', '.join(header)}).")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise ValidationError(f"The CSV header names {', '.join(duplicates)} more than once.")
    return header
