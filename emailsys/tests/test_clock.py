"""The local day of a time zone: the one helper for "today" in daily limits, usage and "sent today"."""

from datetime import UTC, date, datetime

from emailsys import clock

AT = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def test_the_local_day_and_its_midnights_in_the_zone() -> None:
    assert clock.local_day(time_zone="Pacific/Kiritimati", at=AT) == date(2025, 3, 11)  # UTC+14
    start = clock.local_day_start(time_zone="America/New_York", at=AT)  # 08:00 EDT
    assert start == datetime(2025, 3, 10, 4, 0, tzinfo=UTC) and str(start.tzinfo) == "America/New_York"
    assert clock.local_midnight_next(time_zone="America/New_York", at=AT) == datetime(2025, 3, 11, 4, 0, tzinfo=UTC)


def test_a_day_with_a_clock_change_is_23_hours_long() -> None:
    day = datetime(2025, 3, 9, 12, 0, tzinfo=UTC)  # New York moves to EDT at 02:00 local
    start = clock.local_day_start(time_zone="America/New_York", at=day).astimezone(UTC)
    end = clock.local_midnight_next(time_zone="America/New_York", at=day).astimezone(UTC)
    assert (end - start).total_seconds() == 23 * 3600
