"""Reads for operators and the dispatcher: querysets and small read models (plain dicts), each in few queries."""

import zoneinfo
from datetime import datetime, time

from django.db.models import Count, IntegerField, Max, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from campaigns.models import (
    AccountDailyUsage,
    Campaign,
    CampaignAccount,
    Lead,
    Recipient,
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


def _local_day_start(*, now: datetime, time_zone: str) -> tuple[datetime, object]:
    zone = zoneinfo.ZoneInfo(time_zone)
    day = now.astimezone(zone).date()
    return datetime.combine(day, time.min, tzinfo=zone), day


def campaign_list() -> QuerySet[Campaign]:
    """All campaigns, newest first, with step, account, lead and in-progress lead counts."""
    return Campaign.objects.annotate(
        step_count=_count_of(SequenceStep.objects.filter(campaign=OuterRef("pk")).values("campaign")),
        account_count=_count_of(CampaignAccount.objects.filter(campaign=OuterRef("pk")).values("campaign")),
        lead_count=_count_of(Lead.objects.filter(campaign=OuterRef("pk")).values("campaign")),
        in_progress_count=_count_of(
            Lead.objects.filter(campaign=OuterRef("pk"), state=Lead.State.IN_PROGRESS).values("campaign")
        ),
    ).order_by("-created_at", "-id")


def account_list() -> QuerySet[SenderAccount]:
    """All sender accounts by email, with the number of campaigns using each."""
    return SenderAccount.objects.annotate(
        campaign_count=_count_of(CampaignAccount.objects.filter(account=OuterRef("pk")).values("account"))
    ).order_by("email")


def campaign_progress(*, campaign: Campaign) -> dict:
    """Where a campaign stands, in five queries: leads by state and by current step, recipients by status,
    send records by state, and emails sent since midnight in the campaign's time zone."""
    leads = Lead.objects.filter(campaign=campaign)
    lead_counts = leads.aggregate(
        total=Count("pk"),
        in_progress=Count("pk", filter=Q(state=Lead.State.IN_PROGRESS)),
        finished=Count("pk", filter=Q(state=Lead.State.FINISHED)),
        stopped=Count("pk", filter=Q(state=Lead.State.STOPPED)),
    )
    by_step = leads.values("current_step").annotate(n=Count("pk")).order_by("current_step")
    day_start, _ = _local_day_start(now=clock.now(), time_zone=campaign.time_zone)
    records = SendRecord.objects.filter(campaign=campaign)
    return {
        "campaign": campaign,
        "leads": lead_counts,
        "leads_by_step": {row["current_step"]: row["n"] for row in by_step},
        "recipients": _by_value(Recipient.objects.filter(lead__campaign=campaign), "status", Recipient.Status),
        "send_records": _by_value(records, "state", SendRecord.State),
        "sent_today": records.filter(state=SendRecord.State.SENT, sent_at__gte=day_start).count(),
    }


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
    """Today's reservations (the day in the account's time zone) against the daily limit, and sends by state.

    Reserved counts what the arbiter granted today, which includes sends still in flight or that failed
    before delivering; sent_today counts only delivered ones."""
    day_start, day = _local_day_start(now=now, time_zone=account.time_zone)
    reserved = (
        AccountDailyUsage.objects.filter(account=account, day=day).values_list("reserved", flat=True).first() or 0
    )
    records = SendRecord.objects.filter(account=account)
    return {
        "account": account,
        "day": day,
        "reserved_today": reserved,
        "daily_limit": account.daily_limit,
        "remaining_today": max(account.daily_limit - reserved, 0),
        "next_available_at": account.next_available_at,
        "sends": _by_value(records, "state", SendRecord.State),
        "sent_today": records.filter(state=SendRecord.State.SENT, sent_at__gte=day_start).count(),
        "last_sent_at": records.filter(state=SendRecord.State.SENT).aggregate(last=Max("sent_at"))["last"],
    }


def lead_details(*, lead: Lead) -> dict:
    """A lead with its campaign's steps and each recipient's send records keyed by step order (at most one
    per step: the (recipient, step) constraint). Three queries."""
    lead = Lead.objects.select_related("campaign").get(pk=lead.pk)
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
