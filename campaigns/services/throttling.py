"""The arbiter: which account sends next, without ever exceeding a daily limit or undercutting a min wait.

Every decision about an account happens under its row lock (`SELECT … FOR UPDATE`), in a short transaction
that never spans SMTP. A reservation counts against today's limits at once; it is committed (sent or
outcome unknown: the send counts) or released (nothing delivered: the count is given back).

Min wait is measured between actual deliveries: an account with a wait holds a lease (`busy_until`) while
its message is in flight, and its next slot opens `wait` seconds after that send finished. Accounts without
a wait send concurrently. "Today" is the calendar day in the account's time zone.
"""

import random
import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q

from campaigns.models import AccountDailyUsage, Activity, CampaignAccount, SenderAccount
from campaigns.services.activities import activity_record


@dataclass(frozen=True)
class Reservation:
    account: SenderAccount  # as read under its lock (no second read needed by the sender)
    account_id: int
    campaign_account_id: int
    day: date
    wait_seconds: float
    previous_available_at: datetime | None


@dataclass(frozen=True)
class NoAccount:
    """Why no account could be reserved, and when trying again makes sense."""

    retry_at: datetime
    reason: str


def send_lease() -> timedelta:
    return timedelta(seconds=settings.CAMPAIGN_SEND_LEASE_SECONDS)


def account_local_day(account: SenderAccount, at: datetime) -> date:
    return at.astimezone(zoneinfo.ZoneInfo(account.time_zone)).date()


def _next_local_midnight(account: SenderAccount, at: datetime) -> datetime:
    zone = zoneinfo.ZoneInfo(account.time_zone)
    tomorrow = at.astimezone(zone).date() + timedelta(days=1)
    return datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=zone)


def _campaign_used_today(setting: CampaignAccount, day: date) -> int:
    return setting.usage_reserved if setting.usage_day == day else 0


def _room(account: SenderAccount, setting: CampaignAccount, used_today: int, day: date) -> int:
    room = account.daily_limit - used_today
    if setting.daily_limit is not None:
        room = min(room, setting.daily_limit - _campaign_used_today(setting, day))
    return room


def account_reserve(
    *, campaign_id: int, now: datetime, exclude_account_ids: tuple[int, ...] = (), account_filter: int | None = None
) -> Reservation | NoAccount:
    """Round robin (least recently reserved first) over the campaign's active accounts with room.

    Accounts locked by another worker are skipped, not waited for; each is locked alone so one worker never
    hides the others' accounts from a concurrent reservation.
    """
    settings_qs = CampaignAccount.objects.filter(campaign_id=campaign_id, account__status=SenderAccount.Status.ACTIVE)
    if account_filter:
        settings_qs = settings_qs.filter(account_id=account_filter)
    candidates = list(
        settings_qs.order_by(F("account__last_reserved_at").asc(nulls_first=True), "account_id").values_list(
            "id", "account_id"
        )
    )
    # A recently failing account goes last, not away: it may be the only one with room.
    candidates.sort(key=lambda pair: pair[1] in exclude_account_ids)
    retry_at: datetime | None = None
    reasons: list[str] = []
    for setting_id, account_id in candidates:
        with transaction.atomic():
            account = (
                SenderAccount.objects.select_for_update(skip_locked=True)
                .filter(id=account_id, status=SenderAccount.Status.ACTIVE)
                .first()
            )
            if account is None:
                retry_at = min(filter(None, [retry_at, now + timedelta(seconds=1)]))
                reasons.append(f"account {account_id} busy")
                continue
            if account.busy_until and account.busy_until > now:
                retry_at = min(filter(None, [retry_at, min(account.busy_until, now + timedelta(seconds=1))]))
                reasons.append(f"{account.email} sending")
                continue
            if account.next_available_at and account.next_available_at > now:
                retry_at = min(filter(None, [retry_at, account.next_available_at]))
                reasons.append(f"{account.email} waits until {account.next_available_at:%H:%M:%S}")
                continue
            day = account_local_day(account, now)
            usage, _ = AccountDailyUsage.objects.select_for_update().get_or_create(account=account, day=day)
            setting = CampaignAccount.objects.select_for_update().get(id=setting_id)
            if _room(account, setting, usage.reserved, day) <= 0:
                retry_at = min(filter(None, [retry_at, _next_local_midnight(account, now)]))
                reasons.append(f"{account.email} reached today's limit")
                continue
            wait = float(max(account.min_wait_seconds, setting.min_wait_seconds or 0))
            if wait and account.jitter_seconds:
                wait += random.uniform(0, account.jitter_seconds)
            AccountDailyUsage.objects.filter(id=usage.id).update(reserved=F("reserved") + 1)
            if setting.usage_day == day:
                CampaignAccount.objects.filter(id=setting.id).update(usage_reserved=F("usage_reserved") + 1)
            else:
                CampaignAccount.objects.filter(id=setting.id).update(usage_day=day, usage_reserved=1)
            SenderAccount.objects.filter(id=account.id).update(
                last_reserved_at=now, busy_until=now + send_lease() if wait else None
            )
            return Reservation(account, account.id, setting.id, day, wait, account.next_available_at)
    if not candidates:
        return NoAccount(now + timedelta(minutes=5), "the campaign has no active account")
    return NoAccount(retry_at or now + timedelta(seconds=5), "; ".join(reasons))


def reservation_commit(*, reservation: Reservation, finished_at: datetime, delivered: bool) -> None:
    """The send happened (or may have): it keeps counting; the next slot opens `wait` after it finished."""
    updates: dict = {"busy_until": None}
    if reservation.wait_seconds:
        updates["next_available_at"] = finished_at + timedelta(seconds=reservation.wait_seconds)
    if delivered:
        updates["consecutive_failures"] = 0
    SenderAccount.objects.filter(id=reservation.account_id).update(**updates)


def reservation_release(*, reservation: Reservation) -> None:
    """Nothing was delivered: give the count back and reopen the account as it was before."""
    with transaction.atomic():
        SenderAccount.objects.select_for_update().filter(id=reservation.account_id).update(
            busy_until=None, next_available_at=reservation.previous_available_at
        )
        AccountDailyUsage.objects.filter(account_id=reservation.account_id, day=reservation.day, reserved__gt=0).update(
            reserved=F("reserved") - 1
        )
        CampaignAccount.objects.filter(
            id=reservation.campaign_account_id, usage_day=reservation.day, usage_reserved__gt=0
        ).update(usage_reserved=F("usage_reserved") - 1)


def usage_give_back(*, account_id: int, campaign_id: int, day: date) -> None:
    """A crashed worker's claim that never reached the server: its reservation is returned. The account's lease
    (busy_until) is left to expire: by now it may belong to another worker's send."""
    AccountDailyUsage.objects.filter(account_id=account_id, day=day, reserved__gt=0).update(reserved=F("reserved") - 1)
    CampaignAccount.objects.filter(
        Q(campaign_id=campaign_id) & Q(account_id=account_id) & Q(usage_day=day) & Q(usage_reserved__gt=0)
    ).update(usage_reserved=F("usage_reserved") - 1)


ACCOUNT_FAILURES_BEFORE_PAUSE = 5


def account_record_failure(*, account_id: int, reason: str, pause_now: bool) -> bool:
    """Counts consecutive failures; pauses the account (reason shown) on auth errors or too many in a row.
    Returns True when this call paused it."""
    with transaction.atomic():
        account = SenderAccount.objects.select_for_update().get(id=account_id)
        account.consecutive_failures += 1
        pause = account.status == SenderAccount.Status.ACTIVE and (
            pause_now or account.consecutive_failures >= ACCOUNT_FAILURES_BEFORE_PAUSE
        )
        if pause:
            account.status = SenderAccount.Status.PAUSED
            account.status_reason = reason[:1000]
        account.save(update_fields=["consecutive_failures", "status", "status_reason"])
        if pause:
            activity_record(
                kind=Activity.Kind.ACCOUNT_PAUSED,
                account=account,
                message=f"{account.email} paused: {reason}",
                detail={"consecutive_failures": account.consecutive_failures},
            )
    return pause
