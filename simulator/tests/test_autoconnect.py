"""Autoconnect: the first message to a mailbox nobody connected connects it (our Mailbox with a fresh Standard
Webhooks secret, the simulator's subscription to our webhook), so its notification is accepted by POST /webhook."""

import pytest
import requests

from emailsys.testing import wait_until
from processing.models import Mailbox, WebhookReceipt
from simulator.models import SimMailbox

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_message_to_a_new_mailbox_connects_it(live_server, settings) -> None:
    simulator_url = f"{live_server.url}/simulator"
    settings.INBOUND_SIMULATOR_AUTOCONNECT = True
    settings.INBOUND_WEBHOOK_URL = f"{live_server.url}/webhook"
    payload = {"from": "a@example.com", "to": "Fresh@Example.com", "subject": "hello", "body": "b"}
    sent = requests.post(f"{simulator_url}/send_email", json=payload, timeout=10).json()

    mailbox = Mailbox.objects.get(address="fresh@example.com")
    assert mailbox.webhook_secret.startswith("whsec_") and mailbox.enabled
    assert mailbox.provider_url == simulator_url  # not the INBOUND_PROVIDER_URL setting's port
    subscription = SimMailbox.objects.get(address="fresh@example.com")
    assert subscription.watch_url == settings.INBOUND_WEBHOOK_URL
    assert subscription.watch_secret == mailbox.webhook_secret
    receipt = wait_until(
        lambda: WebhookReceipt.objects.filter(mailbox=mailbox).first(), timeout=10, what="the webhook accepted"
    )
    assert receipt.history_id == sent["history_id"]

    # Connected once: the next message reuses the subscription.
    requests.post(f"{simulator_url}/send_email", json=payload, timeout=10)
    assert Mailbox.objects.get(pk=mailbox.pk).webhook_secret == mailbox.webhook_secret


def test_autoconnect_off_leaves_the_mailbox_alone(simulator_url: str) -> None:
    payload = {"from": "a@example.com", "to": "alone@example.com", "subject": "hello", "body": "b"}
    assert requests.post(f"{simulator_url}/send_email", json=payload, timeout=10).status_code == 201
    assert not Mailbox.objects.filter(address="alone@example.com").exists()
