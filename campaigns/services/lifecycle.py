"""A campaign's life: its status (draft, active, paused, completed) and starting its progress over, for the
campaign or one lead. Status changes are made under the campaign's row lock and logged as activities."""

from django.core.exceptions import ValidationError
from django.db import transaction

from audit.actions import AuditAction
from audit.services import audit_record
from campaigns.models import Activity, Campaign, DryRunRecord, Lead, Recipient, SendRecord
from campaigns.services.activities import activity_record
from campaigns.services.live import campaign_live_changed
from campaigns.services.recipients import PROTECTED_RECIPIENT_STATUSES
from emailsys import clock
from emailsys.fields import choice_validate
from emailsys.live import live_version_bump

# Send records a reset may delete: each is known not to have delivered anything.
RESETTABLE_SEND_STATES = (SendRecord.State.FAILED, SendRecord.State.SKIPPED, SendRecord.State.DEFERRED)
# (from draft?, new status) → what the audit trail calls the change.
_STATUS_ACTIONS = {
    (True, Campaign.Status.ACTIVE): AuditAction.CAMPAIGN_ACTIVATE,
    (False, Campaign.Status.ACTIVE): AuditAction.CAMPAIGN_RESUME,
    (True, Campaign.Status.PAUSED): AuditAction.CAMPAIGN_PAUSE,
    (False, Campaign.Status.PAUSED): AuditAction.CAMPAIGN_PAUSE,
    (True, Campaign.Status.COMPLETED): AuditAction.CAMPAIGN_COMPLETE,
    (False, Campaign.Status.COMPLETED): AuditAction.CAMPAIGN_COMPLETE,
}


def campaign_set_status(*, campaign: Campaign, status: str, reason: str = "") -> Campaign:
    """Moves a campaign between draft, active, paused and completed.

    Rules: nothing goes back to draft; a completed campaign is resumed only after `campaign_reset_progress`
    (which leaves it paused); going active needs at least one step and one sender account. Setting the
    current status again changes nothing and logs nothing. Activating makes in-progress leads without a due
    time due now, so leads imported into a draft start with the first dispatcher run.
    """
    choice_validate(value=status, choices=Campaign.Status, what="campaign status")
    with transaction.atomic():
        locked = Campaign.objects.select_for_update().get(pk=campaign.pk)
        previous = locked.status
        if status == previous:
            campaign.status = previous
            return campaign
        if status == Campaign.Status.DRAFT:
            raise ValidationError(f"Campaign {locked.pk} has left draft and cannot go back to it.")
        if previous == Campaign.Status.COMPLETED:
            raise ValidationError(
                f"Campaign {locked.pk} is completed; reset its progress first (reset_campaign_progress), "
                "then activate it."
            )
        if status == Campaign.Status.ACTIVE:
            missing = []
            if not locked.steps.exists():
                missing.append("at least one sequence step")
            if not locked.account_settings.exists():
                missing.append("at least one sender account")
            if missing:
                raise ValidationError(f"Campaign {locked.pk} cannot be activated: it needs {' and '.join(missing)}.")
            Lead.objects.filter(campaign=locked, state=Lead.State.IN_PROGRESS, next_due_at__isnull=True).update(
                next_due_at=clock.now()
            )
        locked.status = status
        locked.save(update_fields=["status", "updated_at"])
        activity_record(
            kind=Activity.Kind.STATUS_CHANGED,
            campaign=locked,
            message=reason or f"Campaign {previous} → {status}",
            detail={"from": previous, "to": status, **({"reason": reason} if reason else {})},
        )
        campaign_live_changed(locked.pk)
        audit_record(
            action=_STATUS_ACTIONS[(previous == Campaign.Status.DRAFT, status)],
            target=locked,
            changes={"status": [previous, status]},
            detail={"reason": reason} if reason else None,
        )
    campaign.status = locked.status
    campaign.updated_at = locked.updated_at
    return campaign


def campaign_reset_progress(*, campaign: Campaign) -> int:
    """Starts every lead of the campaign over at step 1, due now. Returns the number of leads reset.

    Recipients go back to not contacted, except bounced and unsubscribed ones. Dry runs are deleted, and so
    are send records known not to have delivered (failed, skipped, deferred). Sent, handed-over, unknown and
    claimed records stay: they are the proof of what went out (or may have), and because a send record is
    unique per (recipient, step), a reset never makes an already-sent email go out twice — the dispatcher
    finds the record and moves on. A completed campaign becomes paused, ready to be activated again.
    """
    with transaction.atomic():
        locked = Campaign.objects.select_for_update().get(pk=campaign.pk)
        count = _leads_reset(leads=Lead.objects.filter(campaign=locked))
        recipients = _recipients_reset(recipients=Recipient.objects.filter(lead__campaign=locked))
        records, _ = SendRecord.objects.filter(campaign=locked, state__in=RESETTABLE_SEND_STATES).delete()
        dry_runs, _ = DryRunRecord.objects.filter(campaign=locked).delete()
        detail = {
            "reset": True,
            "leads": count,
            "recipients": recipients,
            "send_records_deleted": records,
            "dry_runs_deleted": dry_runs,
        }
        if locked.status == Campaign.Status.COMPLETED:
            detail.update({"from": locked.status, "to": Campaign.Status.PAUSED})
            locked.status = Campaign.Status.PAUSED
            locked.save(update_fields=["status", "updated_at"])
        activity_record(
            kind=Activity.Kind.STATUS_CHANGED, campaign=locked, message=f"Progress reset: {count} leads", detail=detail
        )
        audit_record(action=AuditAction.CAMPAIGN_RESET_PROGRESS, target=locked, detail=detail)
        campaign_live_changed(locked.pk)
    campaign.status = locked.status
    return count


def lead_reset_progress(*, lead: Lead, reactivate: bool = False) -> Lead:
    """`campaign_reset_progress` for one lead: same rules, same guarantee that nothing sent goes out again.

    A completed campaign sends nothing, so resetting one of its leads alone would leave an in-progress lead that
    never sends: that is refused (ValidationError naming `reactivate`) unless `reactivate`, which makes the
    campaign active again in the same transaction (`campaign_set_status`'s rules: it needs a step and an
    account). A draft or paused campaign's lead is reset as asked: it sends once the campaign is active.
    """
    with transaction.atomic():
        Lead.objects.select_for_update().filter(pk=lead.pk).get()
        campaign = Campaign.objects.select_for_update().get(pk=lead.campaign_id)
        if campaign.status == Campaign.Status.COMPLETED and not reactivate:
            raise ValidationError(
                f"Campaign {campaign.pk} is completed and sends nothing: lead {lead.pk} would stay in progress and "
                "never be sent. Reset it with --reactivate to make the campaign active again, or reset the whole "
                "campaign (reset_campaign_progress)."
            )
        _leads_reset(leads=Lead.objects.filter(pk=lead.pk))
        recipients = _recipients_reset(recipients=Recipient.objects.filter(lead_id=lead.pk))
        records, _ = SendRecord.objects.filter(lead_id=lead.pk, state__in=RESETTABLE_SEND_STATES).delete()
        dry_runs, _ = DryRunRecord.objects.filter(recipient__lead_id=lead.pk).delete()
        detail = {"reset": True, "recipients": recipients, "send_records_deleted": records,
                  "dry_runs_deleted": dry_runs}  # fmt: skip
        activity_record(
            kind=Activity.Kind.STATUS_CHANGED, campaign=lead.campaign_id, lead=lead, message="Lead progress reset",
            detail=detail,
        )  # fmt: skip
        audit_record(action=AuditAction.LEAD_RESET_PROGRESS, target=lead, detail=detail)
        campaign_live_changed(campaign.pk)
        if campaign.status == Campaign.Status.COMPLETED:  # and reactivate: completed → paused → active, logged
            Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.PAUSED, **live_version_bump())
            campaign.status = Campaign.Status.PAUSED
            campaign_set_status(
                campaign=campaign, status=Campaign.Status.ACTIVE, reason=f"Reactivated to send reset lead {lead.pk}"
            )
    lead.refresh_from_db()
    return lead


def _recipients_reset(*, recipients) -> int:
    return recipients.exclude(status__in=PROTECTED_RECIPIENT_STATUSES).update(
        status=Recipient.Status.NOT_CONTACTED, last_contacted_at=None, last_step=None
    )


def _leads_reset(*, leads) -> int:
    return leads.update(
        state=Lead.State.IN_PROGRESS, stop_reason="", current_step=1, next_due_at=clock.now(), last_sent_at=None,
        step_due_at=None, claim_token=None,  # a batch in flight must not write over the reset
    )  # fmt: skip
