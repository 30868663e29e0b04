"""The one clock business logic reads. Never `timezone.now()` or SQL `now()` in campaign logic.

Tests and demos can move it: with CLOCK_OFFSET_FILE set, the number of seconds in that file is added to
the real time, in every process that shares the file (workers and beat see a new day without a restart).
"""

import os
import zoneinfo
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from django.conf import settings

_cache: dict[str, tuple[float, float]] = {}


def _offset_seconds() -> float:
    path = getattr(settings, "CLOCK_OFFSET_FILE", None)
    if not path:
        return 0.0
    try:
        mtime = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return 0.0
    cached = _cache.get(str(path))
    if cached and cached[0] == mtime:
        return cached[1]
    text = Path(path).read_text().strip()
    offset = float(text) if text else 0.0
    _cache[str(path)] = (mtime, offset)
    return offset


def now() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=_offset_seconds())


def local_day(*, time_zone: str, at: datetime) -> date:
    """The calendar day it is at `at` in `time_zone` (an account's "today" for its limits, a campaign's for its
    counts): the one definition that the arbiter, selectors and operator actions share."""
    return at.astimezone(zoneinfo.ZoneInfo(time_zone)).date()


def local_day_start(*, time_zone: str, at: datetime) -> datetime:
    """Local midnight that began `at`'s day in `time_zone`."""
    zone = zoneinfo.ZoneInfo(time_zone)
    return datetime.combine(at.astimezone(zone).date(), time.min, tzinfo=zone)


def local_day_next_start(*, time_zone: str, at: datetime) -> datetime:
    """Local midnight that ends `at`'s day in `time_zone` (when a day's limits open again)."""
    zone = zoneinfo.ZoneInfo(time_zone)
    return datetime.combine(at.astimezone(zone).date() + timedelta(days=1), time.min, tzinfo=zone)


def clock_set_offset(*, path: Path, seconds: float) -> None:
    """Moves every process's clock that reads `path` (written atomically, read by mtime)."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(repr(seconds))
    temporary.replace(path)
