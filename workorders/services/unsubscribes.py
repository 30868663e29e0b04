"""Unsubscribing from event mailings: the link and the RFC 8058 one-click POST in every email."""

import uuid

from django.db import transaction

from campaigns.services.suppressions import suppression_add
from workorders.models import Contact


def contact_by_unsubscribe_token(*, token: uuid.UUID) -> Contact | None:
    return Contact.objects.filter(unsubscribe_token=token).first()


def contact_unsubscribe(*, contact: Contact) -> bool:
    """Idempotent (True the first time): the contact leaves every segment and the address is suppressed for
    campaigns and mailings alike."""
    with transaction.atomic():
        changed = Contact.objects.filter(id=contact.id, subscribed=True).update(subscribed=False)
        suppression_add(value=contact.email, reason="unsubscribed from event mailings")
    return bool(changed)
