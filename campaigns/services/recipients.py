"""Recipients' statuses: a reply recorded (the one way, for every entry point), set in bulk by an operator, or
rebuilt from their send records (the truth)."""

from datetime import UTC, datetime

from django.db import transaction
from django.db.models import Exists, OuterRef, Subquery

from audit.actions import AuditAction
from audit.services import audit_record
from campaigns.models import Activity, Campaign, Lead, Recipient, SendRecord
from campaigns.services.activities import activity_record
from campaigns.services.leads import leads_stop
from campaigns.services.live import campaign_live_changed
from emailsys import clock
from emailsys.fields import choice_validate

# Recipient statuses an operator action or a rebuild never overwrites: mailing them again would be wrong.
PROTECTED_RECIPIENT_STATUSES = (Recipient.Status.BOUNCED, Recipient.Status.UNSUBSCRIBED)


def recipient_mark_replied(*, recipient: Recipient, at: datetime | None = None, source: str = "") -> bool:
    """Records that the recipient replied (the admin, the API, the command and inbound mail all come here): they
    get no further step, and with the campaign's `stop_on_reply` the whole lead stops, its reason naming who
    replied and when. A batch in flight sees it before its next send to the lead. False: already replied."""
    at = at or clock.now()
    when = f"{at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    previous = recipient.status
    with transaction.atomic():
        if (
            not Recipient.objects.filter(id=recipient.id)
            .exclude(status=Recipient.Status.REPLIED)
            .update(status=Recipient.Status.REPLIED)
        ):
            return False
        recipient.status = Recipient.Status.REPLIED
        lead = Lead.objects.select_related("campaign").get(id=recipient.lead_id)
        activity_record(
            kind=Activity.Kind.REPLIED,
            campaign=lead.campaign_id,
            lead=lead,
            recipient=recipient,
            message=f"{recipient.email} replied on {when}" + (f" ({source})" if source else ""),
            detail={"replied_at": at.isoformat(), "source": source},
        )
        audit_record(
            action=AuditAction.RECIPIENT_MARK_REPLIED,
            target=recipient,
            changes={"status": [previous, Recipient.Status.REPLIED]},
            detail={"replied_at": at.isoformat()},
        )
        stopped = lead.campaign.stop_on_reply and leads_stop(
            leads=Lead.objects.filter(id=lead.id), reason=f"{recipient.email} replied on {when}"
        )
        if not stopped:  # a stopped lead was announced with its stop
            campaign_live_changed(lead.campaign_id)
    return True


def leads_bulk_update_status(*, campaign: Campaign, status: str) -> int:
    """Sets the status of every recipient of the campaign; returns how many changed.

    Bounced and unsubscribed recipients keep their status: a bulk action must never make someone who
    unsubscribed, or whose address bounces, look mailable again (change those one by one in the admin if you
    really mean it). One activity row for the whole change.
    """
    choice_validate(value=status, choices=Recipient.Status, what="recipient status")
    if status == Recipient.Status.REPLIED:  # each reply stops its lead, as one reply does
        recipients = Recipient.objects.filter(lead__campaign=campaign).exclude(status__in=PROTECTED_RECIPIENT_STATUSES)
        return sum(recipient_mark_replied(recipient=recipient, source="bulk status change") for recipient in recipients)
    with transaction.atomic():
        recipients = Recipient.objects.filter(lead__campaign=campaign).exclude(status=status)
        count = recipients.exclude(status__in=PROTECTED_RECIPIENT_STATUSES).update(status=status)
        activity_record(
            kind=Activity.Kind.STATUS_CHANGED,
            campaign=campaign,
            message=f"{count} recipients set to {status}",
            detail={"recipients_to": status, "count": count},
        )
        audit_record(
            action=AuditAction.CAMPAIGN_SET_RECIPIENT_STATUS, target=campaign, detail={"status": status, "count": count}
        )
        campaign_live_changed(campaign.pk)
    return count


def recipients_update_statuses(*, campaign: Campaign | None = None) -> int:
    """Rebuilds each recipient's status, last_contacted_at and last_step from its send records (the truth).

    A sent record makes a recipient contacted (last_contacted_at and last_step from the latest one); a
    bounced record makes it bounced; with neither it is not contacted. Replied, unsubscribed and bounced
    recipients keep their status (only their contact dates are rebuilt). Each change is a compare-and-set on
    the status read, so a reply or unsubscribe recorded meanwhile is never overwritten. Returns the number of
    recipients changed.
    """
    latest_sent = SendRecord.objects.filter(recipient=OuterRef("pk"), state=SendRecord.State.SENT).order_by(
        "-sent_at", "-id"
    )
    recipients = Recipient.objects.annotate(
        sent_at=Subquery(latest_sent.values("sent_at")[:1]),
        sent_step=Subquery(latest_sent.values("step__order")[:1]),
        bounced=Exists(SendRecord.objects.filter(recipient=OuterRef("pk"), state=SendRecord.State.BOUNCED)),
    )
    if campaign is not None:
        recipients = recipients.filter(lead__campaign=campaign)
    kept = (Recipient.Status.REPLIED, *PROTECTED_RECIPIENT_STATUSES)
    changed = 0
    rows = recipients.values_list("id", "status", "last_contacted_at", "last_step", "sent_at", "sent_step", "bounced")
    for pk, status, last_contacted_at, last_step, sent_at, sent_step, bounced in rows.iterator(chunk_size=2000):
        if status in kept:
            new_status = status
        elif bounced:
            new_status = Recipient.Status.BOUNCED
        elif sent_at is not None:
            new_status = Recipient.Status.CONTACTED
        else:
            new_status = Recipient.Status.NOT_CONTACTED
        if (new_status, sent_at, sent_step) == (status, last_contacted_at, last_step):
            continue
        changed += Recipient.objects.filter(pk=pk, status=status).update(
            status=new_status, last_contacted_at=sent_at, last_step=sent_step
        )
    return changed
