"""Reads for operators and the dispatcher: querysets and small read models (plain dicts), each in few queries.

The one read model of campaigns: the admin's lists and panels, the API's viewsets and the management commands
all read through these (the API filters their lists with `campaigns.filters`). "Today" is always the local
day of the campaign or account (`emailsys.clock.local_day`).
"""

import zoneinfo
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from django.apps import apps
from django.db.models import (
    Case,
    Count,
    DateField,
    DateTimeField,
    Exists,
    Field,
    IntegerField,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce

from campaigns.models import (
    AccountDailyUsage,
    Activity,
    Campaign,
    CampaignAccount,
    Lead,
    Recipient,
    SendAttempt,
    SenderAccount,
    SendRecord,
    SequenceStep,
)
from emailsys import clock


def _count_of(grouped: QuerySet) -> Coalesce:
    """A correlated COUNT subquery over `grouped` (already filtered on OuterRef and reduced with .values() to
    the grouping column): counting several relations through joins would multiply the rows."""
    counts = grouped.order_by().annotate(n=Count("pk")).values("n")[:1]
    return Coalesce(Subquery(counts, output_field=IntegerField()), 0)


def _by_value(rows: QuerySet, field: str, choices: type) -> dict[str, int]:
    counts = dict.fromkeys(choices.values, 0)
    counts.update({row[field]: row["n"] for row in rows.values(field).annotate(n=Count("pk")).order_by()})
    return counts


def _per_time_zone(zones: Iterable[str], value_for: Callable[[str], Any], output_field: Field) -> Case:
    """A per-row value that depends on the row's `time_zone` (its local day, its local midnight), computed in
    Python for each distinct zone, exactly as the services compute it. Unknown zones fall back to UTC."""
    whens = []
    for name in sorted(set(zones)):
        try:
            value = value_for(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            continue
        whens.append(When(time_zone=name, then=Value(value, output_field=output_field)))
    return Case(*whens, default=Value(value_for("UTC"), output_field=output_field), output_field=output_field)


def _sent_since(day_start: datetime | OuterRef) -> Q:
    return Q(state=SendRecord.State.SENT, sent_at__gte=day_start)


def campaign_list() -> QuerySet[Campaign]:
    """All campaigns, newest first, with step, account and lead counts, leads by state (`leads_in_progress`,
    `leads_finished`, `leads_stopped`), `sent_today` (sent since midnight in the campaign's time zone) and
    `unknown_count` (sends whose outcome an operator must decide). One query for the rows, whatever their number; the
    time zones in use are read at once, when this is called."""
    now = clock.now()
    zones = Campaign.objects.order_by().values_list("time_zone", flat=True).distinct()
    leads = Lead.objects.filter(campaign=OuterRef("pk")).values("campaign")
    sent = SendRecord.objects.filter(_sent_since(OuterRef("day_start")), campaign=OuterRef("pk"))
    return Campaign.objects.annotate(
        day_start=_per_time_zone(zones, lambda zone: clock.local_day_start(time_zone=zone, at=now), DateTimeField()),
        step_count=_count_of(SequenceStep.objects.filter(campaign=OuterRef("pk")).values("campaign")),
        account_count=_count_of(CampaignAccount.objects.filter(campaign=OuterRef("pk")).values("campaign")),
        lead_count=_count_of(leads),
        leads_in_progress=_count_of(leads.filter(state=Lead.State.IN_PROGRESS)),
        leads_finished=_count_of(leads.filter(state=Lead.State.FINISHED)),
        leads_stopped=_count_of(leads.filter(state=Lead.State.STOPPED)),
        sent_today=_count_of(sent.values("campaign")),
        unknown_count=_count_of(
            SendRecord.objects.filter(campaign=OuterRef("pk"), state=SendRecord.State.UNKNOWN).values("campaign")
        ),
    ).order_by("-created_at", "-id")


def account_list() -> QuerySet[SenderAccount]:
    """All sender accounts by email, with the number of campaigns using each, `reserved_today`: what the
    arbiter granted on the account's local day (`usage_day`), and `sent_today`: what it delivered since that
    day's local midnight, for campaigns and event mailings alike (every send ledger, `_send_ledgers`). The time
    zones in use are read at once, when this is called."""
    now = clock.now()
    zones = SenderAccount.objects.order_by().values_list("time_zone", flat=True).distinct()
    usage = AccountDailyUsage.objects.filter(account=OuterRef("pk"), day=OuterRef("usage_day"))
    sent_today = [
        _count_of(ledger.objects.filter(_sent_since(OuterRef("day_start")), account=OuterRef("pk")).values("account"))
        for ledger in _send_ledgers()
    ]
    return SenderAccount.objects.annotate(
        campaign_count=_count_of(CampaignAccount.objects.filter(account=OuterRef("pk")).values("account")),
        usage_day=_per_time_zone(zones, lambda zone: clock.local_day(time_zone=zone, at=now), DateField()),
        day_start=_per_time_zone(zones, lambda zone: clock.local_day_start(time_zone=zone, at=now), DateTimeField()),
        reserved_today=Coalesce(Subquery(usage.values("reserved")[:1], output_field=IntegerField()), 0),
        sent_today=sum(sent_today[1:], start=sent_today[0]),
    ).order_by("email")


def _send_ledgers() -> list[type[SendAttempt]]:
    """Every model that records an account's sends: campaigns' SendRecord and event mailings' MailingSend (test
    sends included: the account reserved and sent them). Read from the app registry, so campaigns imports
    nothing of workorders."""
    return [model for model in apps.get_models() if issubclass(model, SendAttempt)]


# A live page's columns of sends per step, from the send records' states ("queued": claimed, not settled yet).
SEND_COLUMNS: dict[str, tuple[str, ...]] = {
    "sent": (SendRecord.State.SENT,),
    "queued": (SendRecord.State.CLAIMED, SendRecord.State.HANDED_OVER),
    "deferred": (SendRecord.State.DEFERRED,),
    "failed": (SendRecord.State.FAILED,),
    "bounced": (SendRecord.State.BOUNCED,),
    "unknown": (SendRecord.State.UNKNOWN,),
    "skipped": (SendRecord.State.SKIPPED,),
}


def campaign_progress(*, campaign: Campaign) -> dict:
    """Where a campaign stands, in four queries: leads by state (with `replied`: leads one of whose recipients
    replied) and the soonest due time of an in-progress lead (`next_due_at`); leads by current step; recipients
    by status; send records by step and state (`sends_by_step`: step order → state → n, summed in
    `send_records`) with emails sent since midnight in the campaign's time zone."""
    leads = Lead.objects.filter(campaign=campaign)
    replied = Exists(Recipient.objects.filter(lead=OuterRef("pk"), status=Recipient.Status.REPLIED))
    lead_counts = leads.aggregate(
        total=Count("pk"),
        in_progress=Count("pk", filter=Q(state=Lead.State.IN_PROGRESS)),
        finished=Count("pk", filter=Q(state=Lead.State.FINISHED)),
        stopped=Count("pk", filter=Q(state=Lead.State.STOPPED)),
        replied=Count("pk", filter=replied),
        next_due_at=Min("next_due_at", filter=Q(state=Lead.State.IN_PROGRESS)),
    )
    next_due_at = lead_counts.pop("next_due_at")
    by_step = leads.values("current_step").annotate(n=Count("pk")).order_by("current_step")
    day_start = clock.local_day_start(time_zone=campaign.time_zone, at=clock.now())
    records = (
        SendRecord.objects.filter(campaign=campaign)
        .values("step__order", "state")
        .annotate(n=Count("pk"), today=Count("pk", filter=_sent_since(day_start)))
        .order_by()
    )
    send_records = dict.fromkeys(SendRecord.State.values, 0)
    sends_by_step: dict[int, dict[str, int]] = {}
    sent_today = 0
    for row in records:
        send_records[row["state"]] += row["n"]
        sends_by_step.setdefault(row["step__order"], dict.fromkeys(SendRecord.State.values, 0))[row["state"]] = row["n"]
        sent_today += row["today"]
    return {
        "campaign": campaign,
        "leads": lead_counts,
        "next_due_at": next_due_at,
        "leads_by_step": {row["current_step"]: row["n"] for row in by_step},
        "recipients": _by_value(Recipient.objects.filter(lead__campaign=campaign), "status", Recipient.Status),
        "send_records": send_records,
        "sends_by_step": sends_by_step,
        "sent_today": sent_today,
    }


def campaign_activity_recent(*, campaign_id: int, limit: int = 20) -> list[Activity]:
    """The campaign's latest activities, newest first (one query; the lead is its id only)."""
    return list(
        Activity.objects.filter(campaign_id=campaign_id)
        .only("id", "created_at", "kind", "message", "lead_id", "step_order")
        .order_by("-created_at", "-id")[:limit]
    )


def campaign_details(*, campaign: Campaign) -> dict:
    """A campaign's sequence steps (with their templates) and its sender accounts with this campaign's own
    limits (`account_settings`, CampaignAccount rows with their account). Two queries."""
    return {
        "campaign": campaign,
        "steps": list(campaign.steps.select_related("template").order_by("order")),
        "account_settings": list(campaign.account_settings.select_related("account").order_by("account__email")),
    }


def lead_list() -> QuerySet[Lead]:
    """Leads by id, each with `recipient_count` and `first_email` (its first recipient by position)."""
    recipients = Recipient.objects.filter(lead=OuterRef("pk"))
    return Lead.objects.annotate(
        recipient_count=_count_of(recipients.values("lead")),
        first_email=Subquery(recipients.order_by("position").values("email")[:1]),
    ).order_by("id")


def lead_list_due(*, now: datetime, campaign_id: int | None = None, limit: int = 100) -> QuerySet[Lead]:
    """In-progress leads of active campaigns whose next step is due, the longest waiting first.

    Filters on state="in_progress" so PostgreSQL can use the partial index `lead_due_in_progress` (finished
    and stopped leads are not in it). Send windows and account limits are the dispatcher's business.
    """
    leads = Lead.objects.filter(
        state=Lead.State.IN_PROGRESS, next_due_at__lte=now, campaign__status=Campaign.Status.ACTIVE
    )
    if campaign_id is not None:
        leads = leads.filter(campaign_id=campaign_id)
    return leads.select_related("campaign").order_by("next_due_at", "id")[:limit]


def account_stats(*, account: SenderAccount, now: datetime) -> dict:
    """Today's reservations (the day in the account's time zone) against the daily limit, and sends by state,
    counting campaign sends and event-mailing sends alike (`_send_ledgers`). One query for the day's usage and
    one per send ledger.

    Reserved counts what the arbiter granted today, which includes sends still in flight or that failed
    before delivering; sent_today counts only delivered ones. `next_available_at`: see
    `account_next_available`."""
    day = clock.local_day(time_zone=account.time_zone, at=now)
    day_start = clock.local_day_start(time_zone=account.time_zone, at=now)
    reserved = (
        AccountDailyUsage.objects.filter(account=account, day=day).values_list("reserved", flat=True).first() or 0
    )
    sends = dict.fromkeys(SendRecord.State.values, 0)
    sent_today = 0
    last_sent_at: datetime | None = None
    for ledger in _send_ledgers():
        rows = (
            ledger.objects.filter(account=account)
            .values("state")
            .annotate(
                n=Count("pk"),
                today=Count("pk", filter=_sent_since(day_start)),
                last=Max("sent_at", filter=Q(state=SendRecord.State.SENT)),
            )
            .order_by()
        )
        for row in rows:
            sends[row["state"]] += row["n"]
            sent_today += row["today"]
            last_sent_at = max(filter(None, [last_sent_at, row["last"]]), default=None)
    return {
        "account": account,
        "day": day,
        "reserved_today": reserved,
        "daily_limit": account.daily_limit,
        "remaining_today": max(account.daily_limit - reserved, 0),
        "next_available_at": account_next_available(account=account, reserved_today=reserved, now=now),
        "sends": sends,
        "sent_today": sent_today,
        "last_sent_at": last_sent_at,
    }


def account_next_available(*, account: SenderAccount, reserved_today: int, now: datetime) -> datetime | None:
    """When the arbiter would let the account send again on its own limits (None: now): its min wait, or the
    next local midnight once the day's limit is used up (the rule of `throttling._account_next_opening`)."""
    openings = [account.next_available_at] if account.next_available_at and account.next_available_at > now else []
    if reserved_today >= account.daily_limit:
        openings.append(clock.local_midnight_next(time_zone=account.time_zone, at=now))
    return max(openings, default=None)


def lead_details(*, lead: Lead) -> dict:
    """A lead with its campaign's steps and each recipient's send records keyed by step order (at most one
    per step: the (recipient, step) constraint). Three queries."""
    lead = Lead.objects.select_related("campaign", "sender_account").get(pk=lead.pk)
    steps = list(SequenceStep.objects.filter(campaign_id=lead.campaign_id).select_related("template"))
    records: dict[int, dict[int, SendRecord]] = {}
    for record in SendRecord.objects.filter(lead=lead).select_related("step", "account").order_by("step__order"):
        records.setdefault(record.recipient_id, {})[record.step.order] = record
    return {
        "lead": lead,
        "campaign": lead.campaign,
        "steps": steps,
        "recipients": [
            {"recipient": recipient, "sends_by_step": records.get(recipient.pk, {})}
            for recipient in lead.recipients.order_by("position")
        ],
    }


def activity_list() -> QuerySet[Activity]:
    """The activity log, newest first."""
    return Activity.objects.order_by("-created_at", "-id")


def send_record_list(*, with_message: bool = False) -> QuerySet[SendRecord]:
    """Send records, newest first, with recipient and step. The stored MIME message is large: loaded only
    `with_message`."""
    records = SendRecord.objects.select_related("recipient", "step").order_by("-created_at", "-id")
    return records if with_message else records.defer("message")


# --- live snapshots (emailsys.live): full state, JSON-able; the list pages build the same cells from their rows ---


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def campaign_cells(*, status: str, leads: dict[str, int], sent_today: int, unknown: int) -> dict[str, Any]:
    """What a campaign's list row shows: from `campaign_progress` (a live snapshot) or from a `campaign_list` row
    (the list page at load), the same numbers."""
    return {
        "status": status,
        "status_label": Campaign.Status(status).label,
        "leads": {name: leads[name] for name in ("total", "in_progress", "finished", "stopped")},
        "sent_today": sent_today,
        "unknown": unknown,
    }


def campaign_row_cells(campaign: Campaign) -> dict[str, Any]:
    """`campaign_cells` of a `campaign_list` row (its annotations; no query)."""
    leads = {"total": campaign.lead_count, "in_progress": campaign.leads_in_progress,
             "finished": campaign.leads_finished, "stopped": campaign.leads_stopped}  # fmt: skip
    return campaign_cells(status=campaign.status, leads=leads, sent_today=campaign.sent_today,
                          unknown=campaign.unknown_count)  # fmt: skip


def campaign_snapshot(*, campaign_id: int) -> dict | None:
    """A campaign's live state, None when it is gone. Seven queries: the campaign, `campaign_progress` (four),
    its steps and its latest 20 activities. `steps` rows carry each step's sends by `SEND_COLUMNS`; `next_due_at`
    is the soonest due time of an in-progress lead."""
    campaign = Campaign.objects.filter(id=campaign_id).first()
    if campaign is None:
        return None
    progress = campaign_progress(campaign=campaign)
    steps = SequenceStep.objects.filter(campaign_id=campaign_id).select_related("template").order_by("order")
    records = progress["send_records"]
    empty = dict.fromkeys(SendRecord.State.values, 0)

    def columns(counts: dict[str, int]) -> dict[str, int]:
        return {column: sum(counts[state] for state in states) for column, states in SEND_COLUMNS.items()}

    return {
        "id": campaign.id,
        "name": campaign.name,
        "time_zone": campaign.time_zone,
        **campaign_cells(
            status=campaign.status,
            leads=progress["leads"],
            sent_today=progress["sent_today"],
            unknown=records[SendRecord.State.UNKNOWN],
        ),  # fmt: skip
        "leads": progress["leads"],  # with `replied`
        "next_due_at": _iso(progress["next_due_at"]),
        "steps": [
            {
                "order": step.order,
                "template": step.template.name,
                "threaded": step.threaded,
                "leads_here": progress["leads_by_step"].get(step.order, 0),
                **columns(progress["sends_by_step"].get(step.order, empty)),
            }
            for step in steps
        ],  # fmt: skip
        "totals": columns(records),
        "activities": [
            {
                "id": activity.id,
                "at": activity.created_at.isoformat(),
                "kind": activity.kind,
                "kind_label": activity.get_kind_display(),
                "message": activity.message,
                "lead_id": activity.lead_id,
                "step_order": activity.step_order,
            }
            for activity in campaign_activity_recent(campaign_id=campaign_id)
        ],  # fmt: skip
    }


def account_cells(*, account: SenderAccount, reserved_today: int, sent_today: int, now: datetime) -> dict[str, Any]:
    """A sender account's live state (list row and change page alike): today's usage against its daily limit,
    when it may send next, its status and why. No query."""
    next_at = account_next_available(account=account, reserved_today=reserved_today, now=now)
    return {
        "id": account.id,
        "email": account.email,
        "time_zone": account.time_zone,
        "status": account.status,
        "status_label": SenderAccount.Status(account.status).label,
        "status_reason": account.status_reason,
        "consecutive_failures": account.consecutive_failures,
        "daily_limit": account.daily_limit,
        "reserved_today": reserved_today,
        "sent_today": sent_today,
        "remaining_today": max(account.daily_limit - reserved_today, 0),
        "next_available_at": _iso(next_at),
        "busy_until": _iso(account.busy_until if account.busy_until and account.busy_until > now else None),
    }


def account_snapshot(*, account_id: int) -> dict | None:
    """`account_cells` of one account, read through `account_list` (two queries: the time zones, the row), None
    when it is gone."""
    account = account_list().filter(pk=account_id).first()
    if account is None:
        return None
    return account_cells(account=account, reserved_today=account.reserved_today, sent_today=account.sent_today,
                         now=clock.now())  # fmt: skip
