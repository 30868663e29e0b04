"""When a campaign's next email can go out and why not sooner: a read over the dispatcher's own rules, so it lives
beside the services it asks (throttling, windows) rather than in the selectors they build on."""

import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from campaigns.models import Campaign, Lead
from campaigns.services.throttling import accounts_next_opening
from campaigns.services.windows import window_next_open


@dataclass(frozen=True)
class NextSend:
    """When a campaign's next email can go out and why not sooner: `at` None means not until an operator acts
    (draft, paused, ended, no lead left, no active account). `reasons` are sentences, the binding one last."""

    at: datetime | None
    due_now: int
    reasons: list[str] = field(default_factory=list)

    def summary(self, time_zone: str) -> str:
        when = (
            "not scheduled"
            if self.at is None
            else f"{self.at.astimezone(zoneinfo.ZoneInfo(time_zone)):%a %Y-%m-%d %H:%M} ({time_zone})"
        )
        return f"Next send: {when}. " + " ".join(self.reasons)


def campaign_next_send(*, campaign: Campaign, now: datetime) -> NextSend:
    """Why nothing is sent now and when the next email can be, read without locks, by the dispatcher's own rules:
    the campaign's status and dates, the first due lead (a step waits its delay after the previous email), the
    send window (`window_next_open`) and the accounts' waits and daily limits (`accounts_next_opening`). What
    `show_due_leads` prints when nothing is due and what the campaign page shows; a few queries."""
    zone = zoneinfo.ZoneInfo(campaign.time_zone)

    def local(value: datetime) -> str:
        return f"{value.astimezone(zone):%a %Y-%m-%d %H:%M}"

    if campaign.status != Campaign.Status.ACTIVE:
        return NextSend(None, 0, [f"The campaign is {campaign.get_status_display().lower()}: activate it to send."])
    if campaign.ends_at and campaign.ends_at <= now:
        return NextSend(None, 0, [f"The campaign ended {local(campaign.ends_at)}."])
    leads = Lead.objects.filter(campaign=campaign, state=Lead.State.IN_PROGRESS)
    first = (
        leads.filter(next_due_at__isnull=False).order_by("next_due_at", "id").values_list("pk", "next_due_at").first()
    )
    if first is None:
        return NextSend(None, 0, ["No lead is in progress: import or add leads."])
    due_now = leads.filter(next_due_at__lte=now).count()
    reasons: list[str] = []
    at = max(first[1], now)
    if first[1] > now:
        reasons.append(f"No lead is due yet: the first, lead {first[0]}, is due {local(first[1])} (its step waits "
                       "its delay after the previous email).")  # fmt: skip
    else:
        reasons.append(f"{due_now} lead(s) due now.")
    if campaign.starts_at and campaign.starts_at > at:
        at = campaign.starts_at
        reasons.append(f"The campaign starts {local(campaign.starts_at)}.")
    opens = window_next_open(at=at, campaign=campaign)
    if opens > at:
        days = ", ".join(day for number, day in enumerate(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"])
                         if number in (campaign.send_days or range(7)))  # fmt: skip
        hours = f"{campaign.send_hour_start or 0:02d}:00–{campaign.send_hour_end or 24:02d}:00"
        reasons.append(f"Outside the send window ({days}, {hours} {campaign.time_zone}): it opens {local(opens)}.")
        at = opens
    opening = accounts_next_opening(campaign_id=campaign.pk, now=now)
    if opening.reason == "the campaign has no active account":
        return NextSend(None, due_now, [*reasons, "The campaign has no active sender account: add or resume one."])
    if opening.retry_at > max(at, now + timedelta(seconds=1)):
        reasons.append(
            f"Account limits: {opening.reason} (min wait or daily limit); room again {local(opening.retry_at)}."
        )
        at = opening.retry_at
    if at <= now:
        reasons.append("The dispatcher sends them on its next run.")
    return NextSend(at, due_now, reasons)
