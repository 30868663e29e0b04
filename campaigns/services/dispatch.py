"""The dispatcher: finds due leads, claims them, and hands them to the `sending` pool in batches.

A scan claims due leads with `SELECT … FOR UPDATE SKIP LOCKED` on the partial index of in-progress leads
(finished and stopped leads are not in it), so its cost follows the number of due leads, not the total.
Claiming pushes a lead's next_due_at out by the send lease and gives it a claim token that its batch carries:
a worker that dies with a batch leaves its leads due again after the lease. The batch that starts first swaps
the token for its own, so any other copy (published twice, redelivered by the broker, or re-published after
the lease passed) finds the claim taken and does nothing.

Order: the lead that has waited longest for its current step goes first (`step_due_at`, kept while the lead
waits for an account or a window), across all campaigns; ties by lead id, so the order is total and stable.
A lead that finds no account with room leaves the due set until one opens, so a throttled campaign's backlog
never holds up another campaign's leads.
"""

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, UUIDField, Value
from django.db.models.functions import Coalesce

from campaigns.models import Campaign, Lead
from campaigns.services.activities import activity_record
from campaigns.services.live import campaign_live_changed
from campaigns.services.throttling import send_lease
from emailsys.live import live_version_bump


@dataclass(frozen=True)
class Batch:
    """Leads of one campaign claimed by one scan, and the scan's claim token: only its holder may act on them."""

    lead_ids: list[int]
    claim: str


@dataclass
class DispatchResult:
    batches: list[Batch] = field(default_factory=list)
    completed_campaigns: list[int] = field(default_factory=list)

    @property
    def lead_count(self) -> int:
        return sum(len(batch.lead_ids) for batch in self.batches)


def campaigns_sendable(*, now: datetime, campaign_id: int | None = None) -> dict[int, int]:
    """Active campaigns inside their start/end dates: {campaign id: batch size}."""
    campaigns = Campaign.objects.filter(status=Campaign.Status.ACTIVE).filter(
        Q(starts_at__isnull=True) | Q(starts_at__lte=now), Q(ends_at__isnull=True) | Q(ends_at__gt=now)
    )
    if campaign_id is not None:
        campaigns = campaigns.filter(id=campaign_id)
    return dict(campaigns.values_list("id", "batch_size"))


def campaigns_end_expired(*, now: datetime) -> list[int]:
    """Campaigns past their end date are completed; their leads stay as they are."""
    ended = list(Campaign.objects.filter(status=Campaign.Status.ACTIVE, ends_at__lte=now).values_list("id", flat=True))
    for campaign_id in ended:
        with transaction.atomic():
            if Campaign.objects.filter(id=campaign_id, status=Campaign.Status.ACTIVE).update(
                status=Campaign.Status.COMPLETED, **live_version_bump()
            ):
                activity_record(
                    kind="status_changed",
                    campaign=campaign_id,
                    message="campaign completed: its end date passed",
                    detail={"from": "active", "to": "completed"},
                )
                campaign_live_changed(campaign_id)
    return ended


def leads_claim_due(
    *, now: datetime, campaign_batch_sizes: dict[int, int], limit: int, claim: str
) -> list[tuple[int, int, str]]:
    """Claims up to `limit` due leads: [(lead id, campaign id, claim token)], longest waiting first. Commits
    before returning.

    A lead without a claim gets `claim`; one whose lease passed keeps its token, so the batch published
    before (still queued behind a backlog, or redelivered) stays as valid as the new one: whichever starts
    first acts and the other does nothing. A new token would void the queued copy, and under a backlog that
    always outlasts the lease every copy would be void by the time it ran.
    """
    if not campaign_batch_sizes:
        return []
    with transaction.atomic():
        claimed = [
            (lead_id, campaign_id, str(token or claim))
            for lead_id, campaign_id, token in Lead.objects.select_for_update(skip_locked=True)
            .filter(state=Lead.State.IN_PROGRESS, next_due_at__lte=now, campaign_id__in=list(campaign_batch_sizes))
            .order_by(Coalesce("step_due_at", "next_due_at"), "id")
            .values_list("id", "campaign_id", "claim_token")[:limit]
        ]
        if claimed:
            Lead.objects.filter(id__in=[lead_id for lead_id, _, _ in claimed]).update(
                next_due_at=now + send_lease(),
                claim_token=Coalesce("claim_token", Value(uuid.UUID(claim), output_field=UUIDField())),
                step_due_at=Coalesce("step_due_at", F("next_due_at")),
            )
    return claimed


def dispatch_due(
    *, now: datetime, campaign_id: int | None = None, batch_size: int | None = None, limit: int | None = None
) -> DispatchResult:
    """One scan: claim due leads and group them into batches per campaign (the campaign's batch size unless
    `batch_size` overrides it). The caller enqueues the batches."""
    result = DispatchResult(completed_campaigns=campaigns_end_expired(now=now))
    sizes = campaigns_sendable(now=now, campaign_id=campaign_id)
    claim = str(uuid.uuid4())
    claimed = leads_claim_due(
        now=now, campaign_batch_sizes=sizes, limit=limit or settings.CAMPAIGN_DISPATCH_SCAN_LIMIT, claim=claim
    )
    per_claim: dict[tuple[int, str], list[int]] = defaultdict(list)  # in claim order within each
    for lead_id, lead_campaign, token in claimed:
        per_claim[lead_campaign, token].append(lead_id)
    for (lead_campaign, token), lead_ids in per_claim.items():
        size = max(1, batch_size or sizes[lead_campaign])
        result.batches.extend(
            Batch(lead_ids=lead_ids[start : start + size], claim=token) for start in range(0, len(lead_ids), size)
        )
    return result
