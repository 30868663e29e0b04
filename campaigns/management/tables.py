"""Helpers shared by the campaigns management commands: plain-text tables, times, lookups."""

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import CommandError
from django.db.models import Model


def when(value: datetime | None) -> str:
    """Times are shown in UTC, to the second, so they compare at a glance across accounts and campaigns."""
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def cell(value: Any, width: int = 60) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return when(value)
    text = " ".join(str(value).split())  # one line per row, whatever the value holds
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns under a dashed rule; "-" for empty cells."""
    texts = [[cell(value) for value in row] for row in rows]
    widths = [max([len(header), *(len(row[index]) for row in texts)]) for index, header in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(value.ljust(width) for value, width in zip(values, widths, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * width for width in widths]), *(line(row) for row in texts)])


def fields(pairs: Iterable[tuple[str, Any]]) -> str:
    """A two-column "label: value" block for one object."""
    pairs = list(pairs)
    width = max(len(label) for label, _ in pairs)
    return "\n".join(f"{label + ':':<{width + 1}} {cell(value, width=200)}" for label, value in pairs)


def object_or_error(model: type[Model], pk: int, label: str, queryset=None) -> Model:
    """The row, or CommandError "No campaign with id 42" (never a traceback)."""
    found = (queryset if queryset is not None else model.objects).filter(pk=pk).first()
    if found is None:
        raise CommandError(f"No {label} with id {pk}")
    return found


def duration(seconds: int) -> str:
    """2d 4h, 30m, 0s: delays read the way they are written in a campaign file."""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts) or "0s"
