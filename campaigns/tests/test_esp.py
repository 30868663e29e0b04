"""ESP sender accounts (django-anymail) against moto server's SESv2 endpoint, a real HTTP process on loopback:
what moto received is read back from its /moto-api/data.json. A socket server that takes the request and never
answers stands in for an API that times out after the request; a closed port for one that cannot be reached."""

import email
import json
import logging
import socket
import threading
import urllib.request
from collections.abc import Iterator

import boto3
import pytest
from django.core.management import call_command
from django.db.models import TextField
from django.db.models.functions import Cast
from django.urls import reverse
from rest_framework.test import APIClient

from campaigns.models import Activity, Lead, SenderAccount, SendRecord
from campaigns.services.delivery import account_check
from campaigns.services.esp import esp_backends_close
from campaigns.tests.scenarios import campaign_scenario, run_until_idle
from emailsys import clock
from emailsys.testing import api_authorization, free_port, unique_token

pytestmark = pytest.mark.django_db

SECRET = "Sesame-Secret-Access-Key/0123456789abcdef"  # moto accepts any credentials


@pytest.fixture(autouse=True)
def _fresh_backends() -> Iterator[None]:
    yield
    esp_backends_close()


def ses_client(endpoint: str):
    return boto3.client(
        "sesv2", region_name="eu-west-1", endpoint_url=endpoint, aws_access_key_id="AKIDTEST",
        aws_secret_access_key=SECRET,
    )  # fmt: skip


def verify_sender(endpoint: str, address: str) -> None:
    ses_client(endpoint).create_email_identity(EmailIdentity=address)


def moto_received(endpoint: str, *, source: str) -> list[dict]:
    """The raw messages moto's SES accepted from this sender (id, source, destinations, raw_data)."""
    with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=10) as response:  # noqa: S310 - loopback
        data = json.load(response)
    return [message for message in data.get("ses", {}).get("RawMessage", []) if message["source"] == source]


def ses_scenario(endpoint: str, *, leads: int = 2, verified: bool = True):
    """A campaign with one Amazon SES account (a unique sender address, so tests share moto without mixing)."""
    name = f"ses {unique_token()}"
    scenario = campaign_scenario(smtp_port=1, accounts=1, daily_limit=50, leads=leads, recipients_per_lead=1,
                                 steps=1, name=name)  # fmt: skip
    account = scenario.accounts[0]
    account.transport, account.smtp_host = SenderAccount.Transport.ESP, ""
    account.esp_name, account.esp_key_id, account.esp_secret = "amazon_ses", "AKIDTEST", SECRET
    account.esp_region, account.esp_endpoint_url = "eu-west-1", endpoint
    account.save()
    if verified:
        verify_sender(endpoint, account.email)
    return scenario, account


def test_a_campaign_sends_through_amazon_ses_and_stores_the_providers_message_id(moto_endpoint, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    scenario, account = ses_scenario(moto_endpoint, leads=2)

    run_until_idle()

    records = list(SendRecord.objects.filter(campaign=scenario.campaign).select_related("recipient"))
    assert [record.state for record in records] == [SendRecord.State.SENT] * 2
    received = {message["id"]: message for message in moto_received(moto_endpoint, source=account.email)}
    assert set(received) == {record.provider_message_id for record in records}
    for record in records:
        assert record.message_id.startswith("<") and record.provider_message_id not in record.message_id
        sent = received[record.provider_message_id]
        assert record.recipient.email in sent["destinations"][0]
        mime = email.message_from_string(sent["raw_data"])
        stored = email.message_from_string(record.message)
        # The stored message is what went: our Message-ID, unsubscribe headers and subject.
        for header in ("Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post", "Subject", "To", "From"):
            assert mime[header] == stored[header], header
        assert record.handed_over_at is not None and record.sent_at is not None
        activity = Activity.objects.get(kind="sent", recipient=record.recipient)
        assert activity.detail["provider_message_id"] == record.provider_message_id
    account.refresh_from_db()
    assert account.status == SenderAccount.Status.ACTIVE
    assert SECRET not in caplog.text

    run_until_idle()  # nothing is due: nothing more goes
    assert len(moto_received(moto_endpoint, source=account.email)) == 2


def test_an_unverified_sender_pauses_the_account_and_defers_the_send(moto_endpoint) -> None:
    scenario, account = ses_scenario(moto_endpoint, leads=1, verified=False)

    run_until_idle()

    record = SendRecord.objects.get(campaign=scenario.campaign)
    assert record.state == SendRecord.State.DEFERRED and record.provider_message_id == ""
    assert f"sender {account.email} is not verified" in record.last_error
    account.refresh_from_db()
    assert account.status == SenderAccount.Status.PAUSED
    assert "not verified" in account.status_reason and "MessageRejected" in account.status_reason
    assert Activity.objects.filter(kind="account_paused", account=account).exists()
    assert moto_received(moto_endpoint, source=account.email) == []

    verify_sender(moto_endpoint, account.email)  # the operator verifies the sender and resumes the account
    SenderAccount.objects.filter(id=account.id).update(status="active", consecutive_failures=0)
    Lead.objects.filter(campaign=scenario.campaign).update(next_due_at=clock.now())  # it waited for the pause
    run_until_idle()
    record.refresh_from_db()
    assert record.state == SendRecord.State.SENT
    assert [m["id"] for m in moto_received(moto_endpoint, source=account.email)] == [record.provider_message_id]


class SilentHttpServer:
    """Accepts connections and reads requests but never answers: an API that times out after the request."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = b""
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            with self.lock:
                self.received += chunk

    @property
    def requests(self) -> int:
        with self.lock:
            return self.received.count(b"POST /")

    def close(self) -> None:
        self.listener.close()
        for conn in self.connections:
            conn.close()


def test_a_timeout_after_the_request_is_unknown_and_never_retried(moto_endpoint, settings) -> None:
    settings.CAMPAIGN_SMTP_TIMEOUT = 1.0
    server = SilentHttpServer()
    try:
        scenario, account = ses_scenario(f"http://127.0.0.1:{server.port}", leads=1, verified=False)
        run_until_idle()
        record = SendRecord.objects.get(campaign=scenario.campaign)
        assert record.state == SendRecord.State.UNKNOWN, record.last_error
        assert "after the request" in record.last_error and "ReadTimeout" in record.last_error
        assert record.handed_over_at is not None
        assert server.requests == 1  # botocore did not send it again

        run_until_idle()
        record.refresh_from_db()
        assert record.state == SendRecord.State.UNKNOWN and server.requests == 1
        assert Activity.objects.filter(kind="unknown", recipient=record.recipient).count() == 1
    finally:
        server.close()


def test_connection_refused_defers_the_send_and_counts_against_the_account(moto_endpoint) -> None:
    scenario, account = ses_scenario(f"http://127.0.0.1:{free_port()}", leads=1, verified=False)

    run_until_idle()

    record = SendRecord.objects.get(campaign=scenario.campaign)
    assert record.state == SendRecord.State.DEFERRED and record.next_attempt_at is not None
    assert "before the request" in record.last_error and "Could not connect" in record.last_error
    account.refresh_from_db()
    assert account.consecutive_failures == 1 and account.status == SenderAccount.Status.ACTIVE


@pytest.mark.django_db(transaction=True)  # the lease keeper's thread needs committed rows
def test_a_work_order_mailing_sends_through_amazon_ses(moto_endpoint) -> None:
    from workorders.models import MailingSend
    from workorders.services.state import workorder_steps_create
    from workorders.services.steps import workorder_run
    from workorders.tests.factories import ContactFactory, WorkOrderFactory

    contacts = [ContactFactory(language="en") for _ in range(2)]
    sender = f"events-{unique_token()}@ses.test"
    work_order = WorkOrderFactory(
        account__email=sender, account__transport="esp", account__smtp_host="", account__esp_name="amazon_ses",
        account__esp_key_id="AKIDTEST", account__esp_secret=SECRET, account__esp_region="eu-west-1",
        account__esp_endpoint_url=moto_endpoint, auto_approve=True,
    )  # fmt: skip
    verify_sender(moto_endpoint, sender)
    workorder_steps_create(work_order=work_order)

    assert workorder_run(work_order_id=work_order.id) == "complete"

    sends = MailingSend.objects.filter(work_order=work_order, is_test=False)
    assert {send.email for send in sends} == {contact.email for contact in contacts}
    assert {send.state for send in sends} == {"sent"}
    received = moto_received(moto_endpoint, source=sender)
    assert {message["id"] for message in received} == {send.provider_message_id for send in sends}


# --- account checks, secrets, admin and API ---------------------------------------------------------------


def test_account_test_asks_ses_whether_the_sender_is_verified(moto_endpoint) -> None:
    _, account = ses_scenario(moto_endpoint, leads=0, verified=False)
    ok, detail = account_check(account=account)
    assert not ok and "neither" in detail and SECRET not in detail

    verify_sender(moto_endpoint, account.email)
    ok, detail = account_check(account=account)
    assert ok and f"{account.email} is verified for sending" in detail

    from io import StringIO

    out = StringIO()
    call_command("test_smtp", str(account.id), stdout=out)
    assert "verified for sending" in out.getvalue()


def test_a_test_send_from_an_esp_account_goes_through_the_esp(moto_endpoint, admin_client) -> None:
    """Defect: "Send test" (admin and `send_test`) on an ESP account went over SMTP to its empty host."""
    scenario, account = ses_scenario(moto_endpoint, leads=0)
    step = scenario.steps[0]
    page_url = reverse("admin:campaigns_campaign_send_test", args=[scenario.campaign.pk])

    response = admin_client.post(
        page_url, {"step": step.pk, "to_email": "me@operator.test", "account": account.pk}, follow=True
    )
    assert response.status_code == 200
    assert any("sent to me@operator.test" in str(message) for message in response.context["messages"])
    from io import StringIO

    out = StringIO()
    call_command("send_test", str(scenario.campaign.pk), "--to", "you@operator.test", "--account-id",
                 str(account.pk), stdout=out)  # fmt: skip
    assert f"via {account.email}" in out.getvalue()

    received = moto_received(moto_endpoint, source=account.email)
    assert [message["destinations"][0] for message in received] == ["me@operator.test", "you@operator.test"]
    for message in received:
        mime = email.message_from_string(message["raw_data"])
        assert mime["Subject"].startswith("[TEST] ") and mime["X-Emailsys-Test"]
    assert not SendRecord.objects.exists()  # a test send is nobody's email


def test_the_esp_secret_is_encrypted_at_rest_and_never_shown(moto_endpoint, admin_client, admin_user) -> None:
    _, account = ses_scenario(moto_endpoint, leads=0)
    raw = SenderAccount.objects.annotate(raw=Cast("esp_secret", output_field=TextField()))
    stored = raw.values_list("raw", flat=True).get(pk=account.pk)
    assert SECRET not in stored and stored.startswith("gAAAA")

    change_url = reverse("admin:campaigns_senderaccount_change", args=[account.pk])
    page = admin_client.get(change_url).content.decode()
    assert 'name="esp_endpoint_url"' in page and 'name="esp_secret"' in page and SECRET not in page
    assert SECRET not in admin_client.get(reverse("admin:campaigns_senderaccount_changelist")).content.decode()

    # An edit with the secret left empty keeps it, where it goes unchanged (see test_account_secrets.py).
    form = {
        "email": account.email, "from_name": "Renamed", "transport": "esp", "smtp_port": 587,
        "security": "starttls", "esp_name": "amazon_ses", "esp_key_id": "AKIDTEST", "esp_secret": "",
        "esp_region": "eu-west-1", "esp_endpoint_url": moto_endpoint, "time_zone": "UTC", "daily_limit": 50,
        "min_wait_seconds": 0, "jitter_seconds": 0,
    }  # fmt: skip
    response = admin_client.post(change_url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    account.refresh_from_db()
    assert account.from_name == "Renamed" and account.esp_secret == SECRET

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=api_authorization(admin_user))
    body = api.get(f"/api/v1/accounts/{account.pk}/").json()
    assert body["transport"] == "esp" and body["esp_name"] == "amazon_ses" and body["has_esp_secret"] is True
    assert "esp_secret" not in body and SECRET not in json.dumps(body)


def test_the_api_creates_an_esp_account_and_names_the_missing_field() -> None:
    api = APIClient()
    from django.contrib.auth import get_user_model

    admin = get_user_model().objects.create_superuser("esp-admin", password="x-unused-pw")
    api.credentials(HTTP_AUTHORIZATION=api_authorization(admin))

    missing_esp = api.post("/api/v1/accounts/", {"email": "a@esp.test", "transport": "esp"}, format="json")
    assert missing_esp.status_code == 400 and "esp_name" in missing_esp.json()
    missing_host = api.post("/api/v1/accounts/", {"email": "b@esp.test"}, format="json")
    assert missing_host.status_code == 400 and "smtp_host" in missing_host.json()

    created = api.post(
        "/api/v1/accounts/",
        {"email": "c@esp.test", "transport": "esp", "esp_name": "amazon_ses", "esp_key_id": "AKIDTEST",
         "esp_secret": SECRET, "esp_region": "eu-west-1"},
        format="json",
    )  # fmt: skip
    assert created.status_code == 201, created.json()
    assert SECRET not in json.dumps(created.json()) and created.json()["has_esp_secret"] is True
    assert SenderAccount.objects.get(email="c@esp.test").esp_secret == SECRET


def test_the_database_refuses_an_account_without_its_transport() -> None:
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        SenderAccount.objects.create(email="x@esp.test", transport="esp")
    with pytest.raises(IntegrityError), transaction.atomic():
        SenderAccount.objects.create(email="y@esp.test", smtp_host="")
