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
    """The calendar day it is at `at` in `time_zone` (an IANA name): the day daily limits and "sent today"
    count in. Raises zoneinfo.ZoneInfoNotFoundError (or ValueError) for a name that is no zone."""
    return at.astimezone(zoneinfo.ZoneInfo(time_zone)).date()


def local_day_start(*, time_zone: str, at: datetime) -> datetime:
    """The local midnight that began that day, as an aware datetime in `time_zone`."""
    return _local_midnight(local_day(time_zone=time_zone, at=at), time_zone)


def local_midnight_next(*, time_zone: str, at: datetime) -> datetime:
    """The local midnight that ends that day (when a daily limit starts over), aware in `time_zone`."""
    return _local_midnight(local_day(time_zone=time_zone, at=at) + timedelta(days=1), time_zone)


def _local_midnight(day: date, time_zone: str) -> datetime:
    return datetime.combine(day, time.min, tzinfo=zoneinfo.ZoneInfo(time_zone))


def clock_set_offset(*, path: Path, seconds: float) -> None:
    """Moves every process's clock that reads `path` (written atomically, read by mtime)."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(repr(seconds))
    temporary.replace(path)
