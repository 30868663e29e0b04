"""Reads for operators and the dispatcher: querysets and small read models (plain dicts), each in few queries.

The one read model of campaigns: the admin's lists and panels, the API's viewsets and the management commands
all read through these (the API filters their lists with `campaigns.filters`). "Today" is always the local
day of the campaign or account (`emailsys.clock.local_day`).
"""

import functools
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
    Field,
    IntegerField,
    Max,
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
from emailsys.db import fetch_prepared


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


# One statement for a campaign's progress (live pages read it a few times a second while it sends: through the
# ORM its five queries cost ten times the CPU). Each column is a JSON value; psycopg decodes them.
_PROGRESS_COLUMNS = """
    (SELECT json_build_object(
                'total', count(*),
                'in_progress', count(*) FILTER (WHERE l.state = 'in_progress'),
                'finished', count(*) FILTER (WHERE l.state = 'finished'),
                'stopped', count(*) FILTER (WHERE l.state = 'stopped'),
                'replied', count(*) FILTER (WHERE EXISTS (
                    SELECT FROM campaigns_recipient r WHERE r.lead_id = l.id AND r.status = 'replied')),
                'next_due_at', min(l.next_due_at) FILTER (WHERE l.state = 'in_progress'))
       FROM campaigns_lead l WHERE l.campaign_id = %(campaign)s) AS leads,
    (SELECT coalesce(json_agg(json_build_array(current_step, n)), '[]')
       FROM (SELECT current_step, count(*) AS n FROM campaigns_lead WHERE campaign_id = %(campaign)s
              GROUP BY current_step) AS by_step) AS leads_by_step,
    (SELECT coalesce(json_agg(json_build_array(status, n)), '[]')
       FROM (SELECT r.status, count(*) AS n FROM campaigns_recipient r JOIN campaigns_lead l ON l.id = r.lead_id
              WHERE l.campaign_id = %(campaign)s GROUP BY r.status) AS by_status) AS recipients,
    (SELECT coalesce(json_agg(json_build_array(step."order", records.state, records.n, records.today)), '[]')
       FROM (SELECT step_id, state, count(*) AS n,
                    count(*) FILTER (WHERE state = 'sent' AND sent_at >= %(day_start)s) AS today
               FROM campaigns_sendrecord WHERE campaign_id = %(campaign)s GROUP BY step_id, state) AS records
       JOIN campaigns_sequencestep step ON step.id = records.step_id) AS sends"""
_PROGRESS_SQL = f"SELECT {_PROGRESS_COLUMNS}"
# The live snapshot: the progress, the campaign's steps and its latest activities.
_SNAPSHOT_SQL = f"""SELECT {_PROGRESS_COLUMNS},
    (SELECT coalesce(json_agg(json_build_array(step."order", template.name, step.threaded) ORDER BY step."order"),
                     '[]')
       FROM campaigns_sequencestep step JOIN campaigns_emailtemplate template ON template.id = step.template_id
      WHERE step.campaign_id = %(campaign)s) AS steps,
    (SELECT coalesce(json_agg(json_build_array(a.id, a.created_at, a.kind, a.message, a.lead_id, a.step_order)
                              ORDER BY a.created_at DESC, a.id DESC), '[]')
       FROM (SELECT * FROM campaigns_activity WHERE campaign_id = %(campaign)s
              ORDER BY created_at DESC, id DESC LIMIT %(activities)s) AS a) AS activities"""  # noqa: S608 - constants


def campaign_progress(*, campaign: Campaign) -> dict:
    """Where a campaign stands, in one statement: leads by state (with `replied`: leads one of whose recipients
    replied) and the soonest due time of an in-progress lead (`next_due_at`); leads by current step; recipients
    by status; send records by step and state (`sends_by_step`: step order → state → n, summed in
    `send_records`) and emails sent since midnight in the campaign's time zone (`sent_today`)."""
    (row,) = fetch_prepared(_PROGRESS_SQL, _progress_params(campaign))
    return _progress_of(campaign, *row)


def _progress_params(campaign: Campaign, **more: Any) -> dict[str, Any]:
    day_start = clock.local_day_start(time_zone=campaign.time_zone, at=clock.now())
    return {"campaign": campaign.pk, "day_start": day_start, **more}


def _progress_of(campaign: Campaign, leads: dict, by_step: list, recipients: list, sends: list) -> dict:
    next_due_at = leads.pop("next_due_at")
    send_records = dict.fromkeys(SendRecord.State.values, 0)
    sends_by_step: dict[int, dict[str, int]] = {}
    sent_today = 0
    for order, state, n, today in sends:
        send_records[state] += n
        sends_by_step.setdefault(order, dict.fromkeys(SendRecord.State.values, 0))[state] = n
        sent_today += today
    return {
        "campaign": campaign,
        "leads": leads,
        "next_due_at": datetime.fromisoformat(next_due_at) if next_due_at else None,
        "leads_by_step": dict(sorted(by_step)),
        "recipients": {**dict.fromkeys(Recipient.Status.values, 0), **dict(recipients)},
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
    counting campaign sends and event-mailing sends alike (`_send_ledgers`). One statement for the day's usage
    (`account_usage_today`) and one query per send ledger.

    Reserved counts what the arbiter granted today, which includes sends still in flight or that failed
    before delivering; sent_today counts only delivered ones. `next_available_at`: see
    `account_next_available`."""
    reserved, sent_today = account_usage_today(account=account, now=now)
    sends = dict.fromkeys(SendRecord.State.values, 0)
    last_sent_at: datetime | None = None
    for ledger in _send_ledgers():
        rows = (
            ledger.objects.filter(account=account)
            .values("state")
            .annotate(n=Count("pk"), last=Max("sent_at", filter=Q(state=SendRecord.State.SENT)))
            .order_by()
        )
        for row in rows:
            sends[row["state"]] += row["n"]
            last_sent_at = max(filter(None, [last_sent_at, row["last"]]), default=None)
    return {
        "account": account,
        "day": clock.local_day(time_zone=account.time_zone, at=now),
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


LIVE_ACTIVITIES = 20  # a campaign page's activity stream: the latest this many


def campaign_snapshot(*, campaign_id: int) -> dict | None:
    """A campaign's live state, None when it is gone. Two statements: the campaign, then `campaign_progress`'s
    with its steps and latest LIVE_ACTIVITIES activities. `steps` rows carry each step's sends by `SEND_COLUMNS`;
    `next_due_at` is the soonest due time of an in-progress lead."""
    rows = fetch_prepared("SELECT name, status, time_zone FROM campaigns_campaign WHERE id = %s", [campaign_id])
    if not rows:
        return None
    ((name, status, time_zone),) = rows
    campaign = Campaign(id=campaign_id, name=name, status=status, time_zone=time_zone)
    (row,) = fetch_prepared(_SNAPSHOT_SQL, _progress_params(campaign, activities=LIVE_ACTIVITIES))
    *progress_row, steps, activities = row
    progress = _progress_of(campaign, *progress_row)
    records = progress["send_records"]
    empty = dict.fromkeys(SendRecord.State.values, 0)
    kinds = dict(Activity.Kind.choices)

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
        "recipients": progress["recipients"],
        "next_due_at": _iso(progress["next_due_at"]),
        "steps": [
            {
                "order": order,
                "template": template,
                "threaded": threaded,
                "leads_here": progress["leads_by_step"].get(order, 0),
                **columns(progress["sends_by_step"].get(order, empty)),
            }
            for order, template, threaded in steps
        ],  # fmt: skip
        "totals": columns(records),
        "activities": [
            {
                "id": pk,
                "at": at,
                "kind": kind,
                "kind_label": kinds.get(kind, kind),
                "message": message,
                "lead_id": lead_id,
                "step_order": step_order,
            }
            for pk, at, kind, message, lead_id, step_order in activities
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


_ACCOUNT_LIVE_FIELDS = ("email", "time_zone", "status", "status_reason", "consecutive_failures", "daily_limit",
                        "next_available_at", "busy_until")  # fmt: skip


def account_snapshot(*, account_id: int) -> dict | None:
    """`account_cells` of one account, None when it is gone. Two statements: the account, then its day's usage
    (`account_usage_today`). Live pages read it a few times a second while the account sends."""
    columns = ", ".join(_ACCOUNT_LIVE_FIELDS)
    rows = fetch_prepared(f"SELECT {columns} FROM campaigns_senderaccount WHERE id = %s", [account_id])  # noqa: S608
    if not rows:
        return None
    account = SenderAccount(id=account_id, **dict(zip(_ACCOUNT_LIVE_FIELDS, rows[0], strict=True)))
    now = clock.now()
    reserved, sent = account_usage_today(account=account, now=now)
    return account_cells(account=account, reserved_today=reserved, sent_today=sent, now=now)


def account_usage_today(*, account: SenderAccount, now: datetime) -> tuple[int, int]:
    """(reserved, sent) on the account's local day, in one statement: what the arbiter granted (the daily
    limit's counter) and what was delivered since local midnight, over every send ledger. The same numbers as
    `account_list`'s `reserved_today` and `sent_today` (which the list needs as annotations, to sort by)."""
    params = {
        "account": account.pk,
        "day": clock.local_day(time_zone=account.time_zone, at=now),
        "day_start": clock.local_day_start(time_zone=account.time_zone, at=now),
    }
    ((reserved, sent),) = fetch_prepared(_usage_today_sql(), params)
    return reserved, sent


@functools.cache
def _usage_today_sql() -> str:
    sent = " + ".join(
        f"(SELECT count(*) FROM {ledger._meta.db_table} WHERE {ledger._meta.get_field('account').column} = "  # noqa: S608
        "%(account)s AND state = 'sent' AND sent_at >= %(day_start)s)"
        for ledger in _send_ledgers()
    )
    usage = "SELECT reserved FROM campaigns_accountdailyusage WHERE account_id = %(account)s AND day = %(day)s"
    return f"SELECT coalesce(({usage}), 0), {sent}"  # noqa: S608 - table names from the models
