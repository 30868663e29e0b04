"""Connecting a provider mailbox: our Mailbox row with a fresh webhook secret, the provider's subscription to our
webhook, and the first (full) sync."""

import base64
import secrets

from django.conf import settings
from django.db import transaction

from processing.models import Mailbox
from processing.providers import MailProvider, provider_for


class MailboxProviderMismatch(Exception):
    """The address is a mailbox of another kind (IMAP): it is polled, never subscribed to a provider's webhook."""


def webhook_secret_new() -> str:
    """A Standard Webhooks secret: "whsec_" + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def mailbox_connect(
    *, address: str, provider_url: str = "", webhook_url: str = "", provider: MailProvider | None = None
) -> Mailbox:
    """Creates (or finds) the mailbox, subscribes our webhook with a new secret, and asks for a sync (a full sync
    when the mailbox was never synced). Idempotent: connecting again rotates the secret and re-subscribes."""
    from processing.services.sync import sync_request

    address = address.strip().lower()
    mailbox, _ = Mailbox.objects.get_or_create(address=address, defaults={"provider_url": provider_url})
    if mailbox.provider != Mailbox.Provider.SIMULATOR:
        raise MailboxProviderMismatch(
            f"{address} is read over {mailbox.get_provider_display()}; it has no provider webhook to connect."
        )
    if provider_url and mailbox.provider_url != provider_url:
        mailbox.provider_url = provider_url
    secret = webhook_secret_new()
    (provider or provider_for(mailbox)).watch(address, url=webhook_url or settings.INBOUND_WEBHOOK_URL, secret=secret)
    mailbox.webhook_secret = secret
    mailbox.enabled = True
    mailbox.save(update_fields=["provider_url", "webhook_secret", "enabled"])
    transaction.on_commit(lambda: sync_request(mailbox_id=mailbox.pk, source="backfill"))
    return mailbox
