"""Creating and stopping leads outside imports (the API's create and bulk create, the admin's add and stop)."""

from django.db import transaction

from audit.actions import AuditAction
from audit.services import audit_record
from campaigns.models import Activity, Campaign, Lead, Recipient
from campaigns.services.activities import activity_record
from campaigns.services.live import campaign_live_changed
from emailsys import clock


def leads_check_unique(*, leads: list[dict | None]) -> dict[int, dict]:
    """Errors by index for external ids used twice in the batch or already taken in their campaign (one query).
    `None` entries (items that failed validation) are skipped."""
    errors: dict[int, dict] = {}
    first_index: dict[tuple[int, str], int] = {}
    for index, lead in enumerate(leads):
        if lead is None or not lead.get("external_id"):
            continue
        key = (lead["campaign"].pk, lead["external_id"])
        if key in first_index:
            errors[index] = {"external_id": [f"Also given for the lead at index {first_index[key]}."]}
        else:
            first_index[key] = index
    if first_index:
        campaign_ids = {campaign_id for campaign_id, _ in first_index}
        external_ids = {external_id for _, external_id in first_index}
        taken = set(
            Lead.objects.filter(campaign_id__in=campaign_ids, external_id__in=external_ids).values_list(
                "campaign_id", "external_id"
            )
        )
        for key in taken & first_index.keys():
            errors[first_index[key]] = {"external_id": ["A lead with this external id exists in this campaign."]}
    return errors


def leads_create(*, leads: list[dict]) -> list[Lead]:
    """Creates validated leads with their recipients in one transaction, two bulk inserts. New leads are in
    progress at step 1 and due now, like imported ones, and emails are stored lower-case. Holds the campaigns'
    row locks, as the CSV import does, so the two never race on the same external id."""
    now = clock.now()
    with transaction.atomic():
        campaign_ids = sorted({lead["campaign"].pk for lead in leads})
        list(Campaign.objects.select_for_update().filter(pk__in=campaign_ids).order_by("pk").values_list("pk"))
        created = Lead.objects.bulk_create(
            [
                Lead(campaign=lead["campaign"], external_id=lead.get("external_id", ""),
                     custom_fields=lead.get("custom_fields") or {}, state=Lead.State.IN_PROGRESS, current_step=1,
                     next_due_at=now)
                for lead in leads
            ]
        )  # fmt: skip
        recipients = [
            Recipient(lead=lead, position=position, **{**values, "email": values["email"].strip().lower()})
            for lead, data in zip(created, leads, strict=True)
            for position, values in enumerate(data["recipients"])
        ]
        Recipient.objects.bulk_create(recipients)
    return created


def lead_create(*, campaign: Campaign, external_id: str = "", custom_fields: dict | None = None) -> Lead:
    """One lead without recipients yet (the admin saves those from its inline right after), created as
    `leads_create` creates every lead: in progress at step 1, due now, under the campaign's row lock."""
    lead = {"campaign": campaign, "external_id": external_id, "custom_fields": custom_fields, "recipients": []}
    return leads_create(leads=[lead])[0]


def leads_stop(*, leads, reason: str) -> int:
    """In-progress leads get no more emails; the reason is kept on the lead and in the activity log. Each
    campaign's live pages hear of it once (in the caller's transaction, if any)."""
    stopped = 0
    campaigns: set[int] = set()
    for lead in leads.filter(state=Lead.State.IN_PROGRESS):
        if Lead.objects.filter(pk=lead.pk, state=Lead.State.IN_PROGRESS).update(
            state=Lead.State.STOPPED, stop_reason=reason, next_due_at=None
        ):
            stopped += 1
            activity_record(
                kind=Activity.Kind.STATUS_CHANGED,
                campaign=lead.campaign_id,
                lead=lead,
                message=f"Lead {reason}",
                detail={"from": Lead.State.IN_PROGRESS, "to": Lead.State.STOPPED},
            )
            audit_record(
                action=AuditAction.LEAD_STOP,
                target=lead,
                changes={"state": [Lead.State.IN_PROGRESS, Lead.State.STOPPED]},
                detail={"reason": reason},
            )
            campaigns.add(lead.campaign_id)
    for campaign_id in sorted(campaigns):
        campaign_live_changed(campaign_id)
    return stopped
