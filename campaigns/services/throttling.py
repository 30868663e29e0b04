"""The arbiter: which account sends next, without ever exceeding a daily limit or undercutting a min wait.

Every decision about an account happens under its row lock (`SELECT … FOR UPDATE`), in a short transaction
that never spans SMTP. A reservation counts against today's limits at once; it is committed (sent or
outcome unknown: the send counts) or released (nothing delivered: the count is given back).

A reservation is taken before its send rows exist (they are rendered and claimed chunk by chunk as the batch
sends), so it is written with a hold (`ReservationHold`) of that many sends: each send row claimed takes one
off in the claim's transaction (`reservation_holds_take`), each send given up before its claim gives its count
back with it (`reservation_release_unclaimed`). A worker killed in between leaves the rest held; once the hold's
lease passes the arbiter gives it back under the account's lock before it counts the account's room
(`_holds_expired_give_back`), so a crash costs the account a lease's delay, never a day's sends.

Min wait is measured between actual deliveries: an account with a wait holds a lease (`busy_until`) while
its message is in flight, and its next slot opens `wait` seconds after that send finished. Accounts without
a wait send concurrently. "Today" is the calendar day in the account's time zone.
"""

import logging
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Min, Q, Value, When
from django.db.models.functions import Greatest

from campaigns.models import AccountDailyUsage, Activity, CampaignAccount, ReservationHold, SenderAccount
from campaigns.services.activities import activity_record
from campaigns.services.live import account_live_changed, account_live_progress
from emailsys import clock
from emailsys.metrics import event_count

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reservation:
    account: SenderAccount  # as read under its lock (no second read needed by the sender)
    account_id: int
    campaign_account_id: int | None  # the campaign's setting for the account; None for an event mailing
    day: date
    wait_seconds: float
    previous_available_at: datetime | None
    hold_id: int | None = None  # the ReservationHold its count is held on until its send row is claimed


@dataclass(frozen=True)
class NoAccount:
    """Why no account could be reserved, and when trying again makes sense."""

    retry_at: datetime
    reason: str


def send_lease() -> timedelta:
    return timedelta(seconds=settings.CAMPAIGN_SEND_LEASE_SECONDS)


def account_local_day(account: SenderAccount, at: datetime) -> date:
    """The account's "today" for its limits: the calendar day in its time zone."""
    return clock.local_day(time_zone=account.time_zone, at=at)


def _campaign_used_today(setting: CampaignAccount, day: date) -> int:
    return setting.usage_reserved if setting.usage_day == day else 0


def _room(account: SenderAccount, setting: CampaignAccount | None, used_today: int, day: date) -> int:
    room = account.daily_limit - used_today
    if setting is not None and setting.daily_limit is not None:
        room = min(room, setting.daily_limit - _campaign_used_today(setting, day))
    return room


def _wait_seconds(account: SenderAccount, setting: CampaignAccount | None) -> float:
    wait = float(max(account.min_wait_seconds, (setting.min_wait_seconds if setting else 0) or 0))
    if wait and account.jitter_seconds:
        wait += random.uniform(0, account.jitter_seconds)
    return wait


def _available_now(now: datetime) -> Q:
    return (Q(busy_until__isnull=True) | Q(busy_until__lte=now)) & (
        Q(next_available_at__isnull=True) | Q(next_available_at__lte=now)
    )


def _lock_next_available(
    *, account_ids: list[int], now: datetime, may_wait: bool, avoid: tuple[int, ...]
) -> SenderAccount | None:
    """The least recently reserved account free to send now, locked. Accounts another worker holds are skipped;
    if that leaves none and this transaction holds no lock yet (`may_wait`), it waits for the next one's
    millisecond-short reservation instead of giving up. Only a transaction that holds nothing ever waits, and
    for one row, so reservations never deadlock."""
    available = SenderAccount.objects.filter(
        _available_now(now), id__in=account_ids, status=SenderAccount.Status.ACTIVE
    )
    order = (F("last_reserved_at").asc(nulls_first=True), "id")
    if avoid:
        order = (Case(When(id__in=avoid, then=Value(1)), default=Value(0)), *order)
    account = available.select_for_update(skip_locked=True).order_by(*order).first()
    if account is None and may_wait:
        account = available.select_for_update().order_by(*order).first()
    return account


def accounts_reserve(
    *,
    campaign_id: int,
    count: int,
    now: datetime,
    avoid_account_ids: tuple[int, ...] = (),
    account_filter: int | None = None,
) -> list[Reservation] | NoAccount:
    """Reserves up to `count` sends for a campaign in one short transaction, round robin over its active
    accounts with room. An account without a min wait takes as many as its room allows (a batch shares one
    SMTP connection, the next batch goes to the next account); one with a min wait takes one: its next slot
    opens only after that send.

    Every count is checked and taken under the account's row lock, so no number of concurrent workers can
    exceed a limit. Accounts in `avoid_account_ids` (they just failed this send) are used last, not never:
    one may be the only one with room.
    """
    settings_qs = CampaignAccount.objects.filter(campaign_id=campaign_id, account__status=SenderAccount.Status.ACTIVE)
    if account_filter:
        settings_qs = settings_qs.filter(account_id=account_filter)
    setting_ids = dict(settings_qs.values_list("account_id", "id"))
    if not setting_ids:
        return NoAccount(now + timedelta(minutes=5), "the campaign has no active account")
    reservations: list[Reservation] = []
    with transaction.atomic():
        examined: set[int] = set()
        while len(reservations) < count:
            remaining_ids = [account_id for account_id in setting_ids if account_id not in examined]
            account = _lock_next_available(
                account_ids=remaining_ids, now=now, may_wait=not examined, avoid=avoid_account_ids
            )
            if account is None:
                break
            examined.add(account.id)
            reservations += _reserve_on(
                account=account, setting_id=setting_ids[account.id], count=count - len(reservations), now=now
            )
    if reservations:
        return reservations
    return accounts_next_opening(campaign_id=campaign_id, now=now, account_ids=list(setting_ids))


def _reserve_on(*, account: SenderAccount, setting_id: int | None, count: int, now: datetime) -> list[Reservation]:
    """Up to `count` sends on one locked account: as many as its room allows, or one if it has a min wait. The
    campaign's setting for the account (`setting_id`; None for an event mailing) narrows its limits."""
    day = account_local_day(account, now)
    _holds_expired_give_back(account_id=account.id, now=now)
    AccountDailyUsage.objects.bulk_create([AccountDailyUsage(account=account, day=day)], ignore_conflicts=True)
    usage = AccountDailyUsage.objects.select_for_update().get(account=account, day=day)
    setting = CampaignAccount.objects.select_for_update().get(id=setting_id) if setting_id is not None else None
    room = _room(account, setting, usage.reserved, day)
    if room <= 0:
        return []
    wait = _wait_seconds(account, setting)
    taken = 1 if wait else min(room, count)
    AccountDailyUsage.objects.filter(id=usage.id).update(reserved=F("reserved") + taken)
    if setting is not None:
        CampaignAccount.objects.filter(id=setting.id).update(
            usage_day=day, usage_reserved=_campaign_used_today(setting, day) + taken
        )
    SenderAccount.objects.filter(id=account.id).update(
        last_reserved_at=now, busy_until=now + send_lease() if wait else None
    )
    hold = ReservationHold.objects.create(
        account=account, campaign_account_id=setting_id, day=day, outstanding=taken, expires_at=now + send_lease()
    )
    account_live_progress(account.id)  # today's usage
    reservation = Reservation(account, account.id, setting_id, day, wait, account.next_available_at, hold.id)
    return [reservation] * taken  # frozen: one value per send


_HOLDS_EXPIRED_DELETE = """
    DELETE FROM campaigns_reservationhold WHERE account_id = %s AND expires_at <= %s
 RETURNING campaign_account_id, day, outstanding"""


def _holds_expired_give_back(*, account_id: int, now: datetime) -> int:
    """Gives back what the account's expired holds still hold (their workers died, or took longer than a lease
    to claim their sends: those sends find their hold gone and are not sent), and deletes them: how many.
    Called under the account's row lock; the DELETE decides against a concurrent claim (`reservation_holds_take`).
    """
    with connection.cursor() as cursor:
        cursor.execute(_HOLDS_EXPIRED_DELETE, [account_id, now])
        returned = [(setting_id, day, count) for setting_id, day, count in cursor.fetchall() if count]
    for setting_id, day, count in returned:
        AccountDailyUsage.objects.filter(account_id=account_id, day=day).update(
            reserved=Greatest(F("reserved") - count, Value(0))
        )
        if setting_id is not None:
            CampaignAccount.objects.filter(id=setting_id, usage_day=day).update(
                usage_reserved=Greatest(F("usage_reserved") - count, Value(0))
            )
    total = sum(count for _, _, count in returned)
    if total:
        logger.warning(
            "account %s: %s reserved send(s) never claimed within their lease given back", account_id, total,
            extra={"event": "reservations_given_back", "account": account_id, "count": total},
        )  # fmt: skip
        transaction.on_commit(lambda: event_count("reservations_given_back", total))
    return total


def reservation_holds_take(*, reservations: list[Reservation], now: datetime) -> bool:
    """Takes one off its hold for each reservation whose send row is being claimed, and renews the holds' lease:
    whether every hold still had them. Runs in the claim's transaction; on False the caller rolls it back (a
    hold the arbiter gave back after its lease: those sends were not counted any more and must not go)."""
    per_hold = Counter(reservation.hold_id for reservation in reservations if reservation.hold_id is not None)
    for hold_id, count in per_hold.items():
        if not ReservationHold.objects.filter(id=hold_id, outstanding__gte=count).update(
            outstanding=F("outstanding") - count, expires_at=now + send_lease()
        ):
            return False
    return True


def accounts_next_opening(
    *, campaign_id: int, now: datetime, account_ids: list[int] | None = None, own_hold_ids: Iterable[int] = ()
) -> NoAccount:
    """When one of the campaign's active accounts can send again, and why none can now, read without locks:
    the soonest account wait, lease or local midnight. `own_hold_ids`: the asking batch's own holds, which it is
    about to claim (they give no room back)."""
    if account_ids is None:
        account_ids = list(
            CampaignAccount.objects.filter(
                campaign_id=campaign_id, account__status=SenderAccount.Status.ACTIVE
            ).values_list("account_id", flat=True)
        )
    if not account_ids:
        return NoAccount(now + timedelta(minutes=5), "the campaign has no active account")
    retry_at: datetime | None = None
    reasons: list[str] = []
    accounts = SenderAccount.objects.filter(id__in=account_ids)
    usage = {
        (account_id, day): reserved
        for account_id, day, reserved in AccountDailyUsage.objects.filter(
            account_id__in=account_ids, day__gte=(now - timedelta(days=2)).date()
        ).values_list("account_id", "day", "reserved")
    }
    settings_by_account = {s.account_id: s for s in CampaignAccount.objects.filter(campaign_id=campaign_id)}
    held = _held_until(account_ids, exclude=own_hold_ids)
    for account in accounts:
        used_today = usage.get((account.id, account_local_day(account, now)), 0)
        opening = _account_next_opening(
            account, settings_by_account[account.id], used_today=used_today, now=now, held_until=held.get(account.id)
        )
        retry_at = min(filter(None, [retry_at, opening.retry_at]))
        reasons.append(opening.reason)
    return NoAccount(retry_at or now + timedelta(seconds=5), "; ".join(reasons))


def _held_until(account_ids: list[int], exclude: Iterable[int] = ()) -> dict[int, datetime]:
    """{account id: when its first hold with sends still unclaimed expires}: room that may come back today."""
    return dict(
        ReservationHold.objects.filter(account_id__in=account_ids, outstanding__gt=0)
        .exclude(id__in=list(exclude))
        .values("account_id")
        .annotate(first=Min("expires_at"))
        .values_list("account_id", "first")
    )


def _account_next_opening(
    account: SenderAccount,
    setting: CampaignAccount | None,
    *,
    used_today: int,
    now: datetime,
    held_until: datetime | None = None,
) -> NoAccount:
    """When one account can send again and why not now: its lease, its wait or its day's limit. A limit reached
    with sends still held for batches in flight is looked at again when the first hold expires: a batch that
    died gives its room back then."""
    if account.busy_until and account.busy_until > now:
        return NoAccount(min(account.busy_until, now + timedelta(seconds=1)), f"{account.email} sending")
    if account.next_available_at and account.next_available_at > now:
        return NoAccount(account.next_available_at, f"{account.email} waits until {account.next_available_at:%H:%M:%S}")
    if _room(account, setting, used_today, account_local_day(account, now)) <= 0:
        midnight = clock.local_midnight_next(time_zone=account.time_zone, at=now)
        if held_until is not None and held_until < midnight:
            return NoAccount(max(held_until, now), f"{account.email} reached today's limit, part of it held in flight")
        return NoAccount(midnight, f"{account.email} reached today's limit")
    return NoAccount(now + timedelta(seconds=1), f"{account.email} busy")


def reservation_commit_writes(reservation: Reservation, *, delivered: bool) -> bool:
    """An account without a wait holds no lease, and one without failures has nothing to reset: no write."""
    return bool(reservation.wait_seconds or (delivered and reservation.account.consecutive_failures))


def reservation_commit(
    *, reservation: Reservation, finished_at: datetime, delivered: bool, announce: bool = True
) -> None:
    """The send happened (or may have): it keeps counting; the next slot opens `wait` after it finished. The
    account's live pages hear of it (coalesced), unless the caller announces its sends itself (`announce`
    False: a campaign batch, once per account when its sends are done)."""
    if announce:
        account_live_progress(reservation.account_id)  # sent today, next available
    if not reservation_commit_writes(reservation, delivered=delivered):
        return
    updates: dict = {"busy_until": None}
    if reservation.wait_seconds:
        updates["next_available_at"] = finished_at + timedelta(seconds=reservation.wait_seconds)
    if delivered:
        updates["consecutive_failures"] = 0
    SenderAccount.objects.filter(id=reservation.account_id).update(**updates)


def reservation_release(*, reservation: Reservation) -> None:
    """Nothing was delivered: give the count back and reopen the account as it was before."""
    with transaction.atomic():
        account_live_progress(reservation.account_id)
        SenderAccount.objects.select_for_update().filter(id=reservation.account_id).update(
            busy_until=None, next_available_at=reservation.previous_available_at
        )
        AccountDailyUsage.objects.filter(account_id=reservation.account_id, day=reservation.day, reserved__gt=0).update(
            reserved=F("reserved") - 1
        )
        if reservation.campaign_account_id is not None:
            CampaignAccount.objects.filter(
                id=reservation.campaign_account_id, usage_day=reservation.day, usage_reserved__gt=0
            ).update(usage_reserved=F("usage_reserved") - 1)


def reservation_release_unclaimed(*, reservation: Reservation) -> None:
    """A send given up before its send row was claimed (its message could not be built, another worker claimed
    it, it was withdrawn): its count comes off its hold and is given back, as `reservation_release`. A hold the
    arbiter already gave back after its lease (`_holds_expired_give_back`) gives nothing twice."""
    if reservation.hold_id is None:
        reservation_release(reservation=reservation)
        return
    with transaction.atomic():
        SenderAccount.objects.select_for_update().filter(id=reservation.account_id).first()  # the arbiter's order
        if ReservationHold.objects.filter(id=reservation.hold_id, outstanding__gt=0).update(
            outstanding=F("outstanding") - 1
        ):
            reservation_release(reservation=reservation)


def usage_give_back(*, account_id: int, campaign_id: int | None, day: date) -> None:
    """A crashed worker's claim that never reached the server: its reservation is returned (`campaign_id` None:
    an event mailing's, counted on the account only). The account's lease (busy_until) is left to expire: by
    now it may belong to another worker's send."""
    account_live_progress(account_id)
    AccountDailyUsage.objects.filter(account_id=account_id, day=day, reserved__gt=0).update(reserved=F("reserved") - 1)
    if campaign_id is None:
        return
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
            account_live_changed(account.id)
        else:
            account_live_progress(account.id)
    return pause


def account_reserve_for_mailing(*, account_id: int, count: int, now: datetime) -> list[Reservation] | NoAccount:
    """Reserves up to `count` sends on one account for an event mailing (a work order has no campaign): the
    account's own daily limit and min wait, checked and taken under its row lock by the same code as a
    campaign's reservation, so the account's limits hold across campaigns and mailings."""
    with transaction.atomic():
        account = _lock_next_available(account_ids=[account_id], now=now, may_wait=True, avoid=())
        reservations = _reserve_on(account=account, setting_id=None, count=count, now=now) if account else []
    if reservations:
        return reservations
    account = SenderAccount.objects.filter(id=account_id).first()
    if account is None or account.status != SenderAccount.Status.ACTIVE:
        reason = "the account does not exist" if account is None else f"{account.email} is {account.status}"
        return NoAccount(now + timedelta(minutes=5), reason)
    usage = AccountDailyUsage.objects.filter(account=account, day=account_local_day(account, now)).first()
    used_today = usage.reserved if usage else 0
    return _account_next_opening(
        account, None, used_today=used_today, now=now, held_until=_held_until([account.id]).get(account.id)
    )
