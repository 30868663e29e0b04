"""POST /webhook as a provider (and an attacker) meets it: signed notifications are accepted once, everything else
gets a clear JSON refusal, never a 500."""

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from processing.models import Mailbox, WebhookReceipt
from processing.services.mailboxes import webhook_secret_new

pytestmark = pytest.mark.django_db

URL = "/webhook"


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox.objects.create(address="inbox@example.com", webhook_secret=webhook_secret_new())


def signed(mailbox: Mailbox, body: bytes | str, *, webhook_id: str = "msg_1", at: datetime | None = None) -> dict:
    data = body if isinstance(body, str) else body.decode()
    moment = at or datetime.now(tz=UTC)
    signature = Webhook(mailbox.webhook_secret).sign(msg_id=webhook_id, timestamp=moment, data=data)
    return {
        "HTTP_WEBHOOK_ID": webhook_id,
        "HTTP_WEBHOOK_TIMESTAMP": str(int(moment.timestamp())),
        "HTTP_WEBHOOK_SIGNATURE": signature,
    }


def notification(history_id: int = 7, address: str = "inbox@example.com") -> str:
    return json.dumps({"type": "mailbox.history", "email_address": address, "history_id": history_id})


def post(client, body, headers: dict):
    return client.generic("POST", URL, body, content_type="application/json", **headers)


def test_signed_notification_is_accepted_once_and_asks_for_a_sync(
    client, mailbox, django_capture_on_commit_callbacks
) -> None:
    body = notification(history_id=42)
    with django_capture_on_commit_callbacks() as callbacks:
        answer = post(client, body, signed(mailbox, body, webhook_id="msg_a"))
    assert answer.status_code == 202, answer.content
    assert answer.json() == {"status": "accepted", "history_id": 42}
    assert len(callbacks) == 1  # the sync request, after commit
    mailbox.refresh_from_db()
    assert mailbox.wanted_history_id == 42

    with django_capture_on_commit_callbacks() as callbacks:
        again = post(client, body, signed(mailbox, body, webhook_id="msg_a"))
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    assert callbacks == []
    assert WebhookReceipt.objects.count() == 1


def test_an_older_notification_never_lowers_the_wanted_id(client, mailbox) -> None:
    for webhook_id, history_id in (("n1", 50), ("n2", 20)):
        body = notification(history_id=history_id)
        assert post(client, body, signed(mailbox, body, webhook_id=webhook_id)).status_code == 202
    mailbox.refresh_from_db()
    assert mailbox.wanted_history_id == 50


def test_no_sync_is_asked_for_when_the_cursor_is_already_there(
    client, mailbox, django_capture_on_commit_callbacks
) -> None:
    Mailbox.objects.filter(pk=mailbox.pk).update(last_history_id=100)
    body = notification(history_id=90)
    with django_capture_on_commit_callbacks() as callbacks:
        assert post(client, body, signed(mailbox, body)).status_code == 202
    assert callbacks == []


@pytest.mark.parametrize("dropped", ["HTTP_WEBHOOK_ID", "HTTP_WEBHOOK_TIMESTAMP", "HTTP_WEBHOOK_SIGNATURE"])
def test_missing_signature_header_is_401(client, mailbox, dropped) -> None:
    body = notification()
    headers = signed(mailbox, body)
    del headers[dropped]
    answer = post(client, body, headers)
    assert answer.status_code == 401
    assert "Missing signature header" in answer.json()["detail"]


def test_wrong_secret_or_changed_body_is_401(client, mailbox) -> None:
    body = notification(history_id=5)
    other = Mailbox(address="x@example.com", webhook_secret=webhook_secret_new())
    assert post(client, body, signed(other, body)).status_code == 401
    tampered = notification(history_id=6)
    answer = post(client, tampered, signed(mailbox, body))
    assert answer.status_code == 401
    assert answer.json() == {"detail": "The signature does not match."}
    assert not WebhookReceipt.objects.exists()


@pytest.mark.parametrize("offset", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_timestamp_outside_five_minutes_is_401(client, mailbox, offset) -> None:
    body = notification()
    answer = post(client, body, signed(mailbox, body, at=datetime.now(tz=UTC) + offset))
    assert answer.status_code == 401
    assert "5 minutes" in answer.json()["detail"]


def test_replay_within_the_window_with_the_same_id_does_nothing(client, mailbox) -> None:
    body = notification(history_id=9)
    headers = signed(mailbox, body, webhook_id="replayed", at=datetime.now(tz=UTC) - timedelta(minutes=4))
    assert post(client, body, headers).status_code == 202
    assert post(client, body, headers).status_code == 200
    assert WebhookReceipt.objects.filter(webhook_id="replayed").count() == 1


def test_unknown_or_disabled_mailbox_is_401(client, mailbox) -> None:
    body = notification(address="nobody@example.com")
    assert post(client, body, signed(mailbox, body)).status_code == 401
    Mailbox.objects.filter(pk=mailbox.pk).update(enabled=False)
    body = notification()
    answer = post(client, body, signed(mailbox, body))
    assert answer.status_code == 401
    assert "No connected mailbox" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"email_address": "inbox@example.com"}', "history_id"),
        (b'{"email_address": "inbox@example.com", "history_id": "7"}', "history_id"),
        (b'{"email_address": "inbox@example.com", "history_id": -1}', "history_id"),
        (b'{"email_address": "inbox@example.com", "history_id": true}', "history_id"),
        (b'{"email_address": "inbox@example.com", "history_id": 99999999999999999999}', "history_id"),
        (b'{"email_address": 5, "history_id": 7}', "email_address"),
    ],
)
def test_malformed_body_is_400_with_a_clear_message(client, mailbox, body, message) -> None:
    headers = {
        "HTTP_WEBHOOK_ID": "m",
        "HTTP_WEBHOOK_TIMESTAMP": str(int(time.time())),
        "HTTP_WEBHOOK_SIGNATURE": "v1,x",
    }
    answer = post(client, body, headers)
    assert answer.status_code == 400
    assert message in answer.json()["detail"]


def test_body_over_the_limit_is_413(client, mailbox, settings) -> None:
    body = json.dumps({"email_address": "inbox@example.com", "history_id": 1, "pad": "x" * 70_000})
    answer = post(client, body, signed(mailbox, body))
    assert answer.status_code == 413
    assert str(settings.INBOUND_WEBHOOK_MAX_BYTES) in answer.json()["detail"]


def test_garbage_signatures_are_401_not_500(client, mailbox) -> None:
    body = notification()
    for signature in ("", "v1", "v1,", "v1,***", "v2,abc v1", ",,,", "v1,AAAA v1,=="):
        headers = {**signed(mailbox, body), "HTTP_WEBHOOK_SIGNATURE": signature or " "}
        assert post(client, body, headers).status_code == 401, signature
    headers = {**signed(mailbox, body), "HTTP_WEBHOOK_TIMESTAMP": "soon"}
    assert post(client, body, headers).status_code == 401


def test_get_is_405_with_json(client) -> None:
    answer = client.get(URL)
    assert answer.status_code == 405
    assert answer["Allow"] == "POST"
    assert answer.json() == {"detail": "Use POST."}
