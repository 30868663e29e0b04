"""Unsubscribing: the link in every email and the RFC 8058 one-click POST from mailbox providers."""

import uuid

from django.conf import settings
from django.db import transaction

from campaigns.models import Activity, Recipient
from campaigns.services.activities import activity_record
from campaigns.services.suppressions import suppression_add


def recipient_unsubscribe_url(recipient: Recipient) -> str:
    """The link every campaign email carries (and its List-Unsubscribe header)."""
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}/u/{recipient.unsubscribe_token}/"


def recipient_by_unsubscribe_token(*, token: uuid.UUID) -> Recipient | None:
    return Recipient.objects.select_related("lead").filter(unsubscribe_token=token).first()


def recipient_unsubscribe(*, recipient: Recipient, source: str) -> bool:
    """Idempotent: returns True the first time. The address is suppressed for every campaign, not only this one."""
    with transaction.atomic():
        changed = (
            Recipient.objects.filter(id=recipient.id)
            .exclude(status=Recipient.Status.UNSUBSCRIBED)
            .update(status=Recipient.Status.UNSUBSCRIBED)
        )
        suppression_add(value=recipient.email, reason="unsubscribed")
        if changed:
            activity_record(
                kind=Activity.Kind.UNSUBSCRIBED,
                campaign=recipient.lead.campaign_id,
                lead=recipient.lead_id,
                recipient=recipient,
                message=f"{recipient.email} unsubscribed ({source})",
                detail={"source": source},
            )
    return bool(changed)
