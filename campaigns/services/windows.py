"""Send windows: the days and hours, in the campaign's time zone, when its emails may go out."""

import zoneinfo
from datetime import datetime, time, timedelta

from campaigns.models import Campaign


def window_next_open(*, at: datetime, campaign: Campaign) -> datetime:
    """`at` itself when inside the window, otherwise the window's next opening (at most a week ahead)."""
    days = set(campaign.send_days or range(7))
    start_hour = campaign.send_hour_start if campaign.send_hour_start is not None else 0
    end_hour = campaign.send_hour_end if campaign.send_hour_end is not None else 24
    if len(days) == 7 and (start_hour, end_hour) == (0, 24):
        return at
    zone = zoneinfo.ZoneInfo(campaign.time_zone)
    local = at.astimezone(zone)
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        if day.weekday() not in days:
            continue
        opens = datetime.combine(day, time(start_hour), tzinfo=zone)
        closes = datetime.combine(day, time(0), tzinfo=zone) + timedelta(hours=end_hour)
        if local < opens:
            return opens
        if local < closes:
            return at
    raise ValueError(f"campaign {campaign.pk} has no open send window")  # unreachable: validators require a day
