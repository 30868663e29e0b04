"""The dispatcher: finds due leads, claims them, and hands them to the `sending` pool in batches.

A scan claims due leads with `SELECT … FOR UPDATE SKIP LOCKED` on the partial index of in-progress leads
(finished and stopped leads are not in it), so its cost follows the number of due leads, not the total.
Claiming pushes a lead's next_due_at out by the send lease and gives it a claim token that its batch carries:
a worker that dies with a batch leaves its leads due again after the lease, and the next scan's new token
makes any old copy of that batch (a backlog that outlived the lease, a broker's redelivery, a duplicate
publish) a no-op.

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
from django.db.models import F, Q
from django.db.models.functions import Coalesce

from campaigns.models import Campaign, Lead
from campaigns.services.activities import activity_record
from campaigns.services.throttling import send_lease


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
        if Campaign.objects.filter(id=campaign_id, status=Campaign.Status.ACTIVE).update(
            status=Campaign.Status.COMPLETED
        ):
            activity_record(
                kind="status_changed",
                campaign=campaign_id,
                message="campaign completed: its end date passed",
                detail={"from": "active", "to": "completed"},
            )
    return ended


def leads_claim_due(
    *, now: datetime, campaign_batch_sizes: dict[int, int], limit: int, claim: str
) -> list[tuple[int, int]]:
    """Claims up to `limit` due leads with the token `claim`: [(lead id, campaign id)], longest waiting first.
    Commits before returning."""
    if not campaign_batch_sizes:
        return []
    with transaction.atomic():
        claimed = list(
            Lead.objects.select_for_update(skip_locked=True)
            .filter(state=Lead.State.IN_PROGRESS, next_due_at__lte=now, campaign_id__in=list(campaign_batch_sizes))
            .order_by(Coalesce("step_due_at", "next_due_at"), "id")
            .values_list("id", "campaign_id")[:limit]
        )
        if claimed:
            Lead.objects.filter(id__in=[lead_id for lead_id, _ in claimed]).update(
                next_due_at=now + send_lease(),
                claim_token=claim,
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
    per_campaign: dict[int, list[int]] = defaultdict(list)
    for lead_id, lead_campaign in claimed:
        per_campaign[lead_campaign].append(lead_id)
    for lead_campaign, lead_ids in per_campaign.items():
        size = max(1, batch_size or sizes[lead_campaign])
        result.batches.extend(
            Batch(lead_ids=lead_ids[start : start + size], claim=claim) for start in range(0, len(lead_ids), size)
        )
    return result
