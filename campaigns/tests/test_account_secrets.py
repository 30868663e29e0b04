"""Secrets bound to their destination: whoever may edit an account cannot point it at their own server and have
its stored password or API key sent there — through the admin, the API or the YAML import. A real SMTP server
that takes any password, and an HTTP server standing in for an ESP, both on loopback, show what would leave.
Plus the two rules every send obeys: no AUTH without TLS (except loopback or SMTP_PLAINTEXT_AUTH_HOSTS) and ESP
endpoint overrides only from ESP_ENDPOINT_ALLOWLIST."""

import json
from io import StringIO

import pytest
from auditlog.models import LogEntry
from django.core.management import CommandError, call_command
from django.urls import reverse
from rest_framework.test import APIClient

from campaigns.models import SenderAccount, SendRecord
from campaigns.services.destinations import SECRET_DESTINATIONS
from campaigns.tests.factories import SenderAccountFactory
from campaigns.tests.scenarios import campaign_scenario, run_until_idle
from emailsys.testing import RecordingHttpServer, RecordingSmtpServer, api_authorization, free_port

pytestmark = pytest.mark.django_db

PASSWORD = "Pa55word-of-the-real-mailbox"
API_KEY = "postmark-server-token-0123456789"


@pytest.fixture
def api(admin_user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=api_authorization(admin_user))
    return client


def change_url(account: SenderAccount) -> str:
    return reverse("admin:campaigns_senderaccount_change", args=[account.pk])


def admin_form(account: SenderAccount, **changes) -> dict:
    """The account's change form as the admin page submits it: secrets empty (write-only)."""
    fields = ["email", "from_name", "first_name", "last_name", "provider", "signature", "transport", "smtp_host",
              "smtp_port", "security", "smtp_username", "esp_name", "esp_key_id", "esp_region", "esp_endpoint_url",
              "esp_configuration_set", "time_zone", "daily_limit", "min_wait_seconds", "jitter_seconds"]  # fmt: skip
    data = {name: getattr(account, name) for name in fields}
    data.update({"smtp_password": "", "esp_secret": "", **changes})
    return data


def admin_messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def account_test_action(admin_client, account: SenderAccount) -> str:
    response = admin_client.post(
        reverse("admin:campaigns_senderaccount_changelist"),
        {"action": "test_smtp", "_selected_action": [account.pk]},
        follow=True,
    )
    [message] = admin_messages(response)
    return message


def smtp_scenario(port: int) -> tuple:
    scenario = campaign_scenario(smtp_port=port, accounts=1, leads=1, recipients_per_lead=1, steps=1, daily_limit=50)
    account = scenario.accounts[0]
    account.smtp_username, account.smtp_password = "mailer", PASSWORD
    account.save()
    return scenario, account


def move_smtp(via: str, account: SenderAccount, *, admin_client, api: APIClient, **changes) -> list[str]:
    """Points the account elsewhere the way an operator would, without its password: admin messages (or [])."""
    if via == "admin":
        response = admin_client.post(change_url(account), admin_form(account, **changes), follow=True)
        assert response.status_code == 200 and response.redirect_chain, response.content.decode()[:2000]
        return admin_messages(response)
    response = api.patch(f"/api/v1/accounts/{account.pk}/", changes, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["has_password"] is False and PASSWORD not in json.dumps(response.json())
    return []


# --- the acceptance scenario: SMTP ---------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["admin", "api"])
def test_an_smtp_account_pointed_elsewhere_without_its_password_never_sends_it_there(via, admin_client, api) -> None:
    with RecordingSmtpServer(password=PASSWORD) as home, RecordingSmtpServer(any_password=True) as other:
        scenario, account = smtp_scenario(home.port)
        notices = move_smtp(via, account, admin_client=admin_client, api=api, smtp_port=other.port)
        if via == "admin":
            assert any("SMTP password cleared because smtp_port changed" in notice for notice in notices), notices

        account.refresh_from_db()
        assert account.smtp_port == other.port and not account.smtp_password
        assert api.get(f"/api/v1/accounts/{account.pk}/").json()["has_password"] is False

        # The campaign sends, the operator tests the account (admin action and command): nothing reaches the
        # other server — not a connection, let alone AUTH — and each says why.
        run_until_idle()
        assert "FAILED — no password stored" in account_test_action(admin_client, account)
        with pytest.raises(CommandError, match="no password stored"):
            call_command("test_smtp", str(account.pk), stdout=StringIO())
        assert (other.auth_snapshot(), other.ehlo_count, other.snapshot()) == ([], 0, [])
        assert (home.auth_snapshot(), home.snapshot()) == ([], [])
        account.refresh_from_db()
        assert account.status == SenderAccount.Status.PAUSED and account.status_reason.startswith("no password stored")
        record = SendRecord.objects.get(lead=scenario.leads[0])
        assert record.state == SendRecord.State.DEFERRED and record.last_error.startswith("no password stored")

        # Entering the password again with the new destination is the operator's choice, and it works there.
        response = api.patch(f"/api/v1/accounts/{account.pk}/", {"smtp_password": PASSWORD}, format="json")
        assert response.status_code == 200 and response.json()["has_password"] is True
        assert "OK" in account_test_action(admin_client, account)
        assert [(attempt.login, attempt.password) for attempt in other.auth_snapshot()] == [("mailer", PASSWORD)]

    # The audit trail: the move that cleared the password (from where it was made), then the new password —
    # both by the admin user, each only as "changed".
    edits = LogEntry.objects.filter(additional_data__action="account.update", object_pk=str(account.pk))
    trail = [(entry.actor.username, entry.additional_data["source"], entry.changes.get("smtp_password"))
             for entry in edits.order_by("pk")]  # fmt: skip
    assert trail == [("admin", via, ["***", ""]), ("admin", "api", ["", "***"])]
    assert PASSWORD not in json.dumps([entry.changes for entry in edits])


def test_entering_the_password_again_in_the_same_edit_keeps_it(admin_client, api) -> None:
    with RecordingSmtpServer(password=PASSWORD) as home, RecordingSmtpServer(password=PASSWORD) as moved:
        _, account = smtp_scenario(home.port)
        response = admin_client.post(
            change_url(account), admin_form(account, smtp_port=moved.port, smtp_password=PASSWORD), follow=True
        )
        assert not any("cleared" in notice for notice in admin_messages(response))
        assert "OK" in account_test_action(admin_client, account)
        assert [attempt.password for attempt in moved.auth_snapshot()] == [PASSWORD]

        # An edit that leaves the destination alone keeps the password, in the admin and the API.
        admin_client.post(change_url(account), admin_form(account, daily_limit=7, smtp_port=moved.port))
        api.patch(f"/api/v1/accounts/{account.pk}/", {"smtp_host": "127.0.0.1", "from_name": "New"}, format="json")
        account.refresh_from_db()
        assert (account.daily_limit, account.from_name, account.smtp_password) == (7, "New", PASSWORD)


def test_the_campaign_import_cannot_change_an_account(tmp_path) -> None:
    """The YAML import references accounts by email; any other key is an error and nothing is imported."""
    with RecordingSmtpServer(password=PASSWORD) as home, RecordingSmtpServer(any_password=True) as other:
        _, account = smtp_scenario(home.port)
        file = tmp_path / "campaign.yaml"
        file.write_text(
            "name: Moved\nsteps:\n  - template: {name: moved-1, subject: Hi, body_text: Hello}\n"
            f"accounts:\n  - email: {account.email}\n    smtp_port: {other.port}\n    smtp_password: ''\n"
        )
        with pytest.raises(CommandError) as refused:
            call_command("import_campaign", str(file), stdout=StringIO())
        assert "accounts[0].smtp_port: unknown key" in str(refused.value)
        assert "accounts[0].smtp_password: unknown key" in str(refused.value)
        account.refresh_from_db()
        assert (account.smtp_port, account.smtp_password) == (home.port, PASSWORD)
        assert other.auth_snapshot() == []


@pytest.mark.parametrize("field", sorted({name for names in SECRET_DESTINATIONS.values() for name in names}))
def test_every_destination_field_clears_its_secret_and_only_its_own(field, api) -> None:
    account = SenderAccountFactory(
        smtp_username="mailer", smtp_password=PASSWORD, esp_name="postmark", esp_secret=API_KEY,
        esp_endpoint_url="http://127.0.0.1:9/",
    )  # fmt: skip
    new_values = {
        "transport": "esp", "smtp_host": "localhost", "smtp_port": 2525, "security": "starttls",
        "smtp_username": "someone-else", "esp_name": "sendgrid", "esp_endpoint_url": "http://127.0.0.1:10/",
        "esp_key_id": "AKID-OTHER", "esp_region": "eu-west-2",
    }  # fmt: skip
    response = api.patch(f"/api/v1/accounts/{account.pk}/", {field: new_values[field]}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["has_password"] is (field not in SECRET_DESTINATIONS["smtp_password"])
    assert body["has_esp_secret"] is (field not in SECRET_DESTINATIONS["esp_secret"])


def test_the_same_destination_written_differently_keeps_the_secret_and_null_still_removes_it(api) -> None:
    account = SenderAccountFactory(smtp_host="localhost", smtp_username="mailer", smtp_password=PASSWORD)
    response = api.patch(f"/api/v1/accounts/{account.pk}/", {"smtp_host": "LOCALHOST."}, format="json")
    assert response.status_code == 200 and response.json()["has_password"] is True
    response = api.patch(f"/api/v1/accounts/{account.pk}/", {"smtp_password": None}, format="json")
    assert response.status_code == 200 and response.json()["has_password"] is False


# --- the acceptance scenario: an ESP -------------------------------------------------------------------------


def postmark_reply(request) -> dict:
    to = json.loads(request.body or b"{}").get("To", "")
    return {"To": to, "SubmittedAt": "2026-01-01T00:00:00Z", "MessageID": "pm-1", "ErrorCode": 0, "Message": "OK"}


def key_headers(server: RecordingHttpServer) -> list[dict]:
    names = ("authorization", "x-postmark-server-token", "x-api-key", "api-key")
    return [{k: v for k, v in request.headers.items() if k in names} for request in server.snapshot()]


@pytest.mark.parametrize("via", ["admin", "api"])
def test_an_esp_account_pointed_elsewhere_without_its_key_never_sends_it_there(via, admin_client, api) -> None:
    with RecordingHttpServer(reply=postmark_reply) as other:
        scenario = campaign_scenario(smtp_port=1, accounts=1, leads=1, recipients_per_lead=1, steps=1, daily_limit=50)
        account = scenario.accounts[0]
        account.transport, account.smtp_host, account.esp_name = SenderAccount.Transport.ESP, "", "postmark"
        account.esp_secret, account.esp_endpoint_url = API_KEY, f"http://127.0.0.1:{free_port()}/"
        account.save()

        if via == "admin":
            response = admin_client.post(change_url(account), admin_form(account, esp_endpoint_url=other.url),
                                         follow=True)  # fmt: skip
            assert any("ESP secret cleared because esp_endpoint_url changed" in m for m in admin_messages(response))
        else:
            response = api.patch(f"/api/v1/accounts/{account.pk}/", {"esp_endpoint_url": other.url}, format="json")
            assert response.status_code == 200 and response.json()["has_esp_secret"] is False
        account.refresh_from_db()
        assert account.esp_endpoint_url.rstrip("/") == other.url and not account.esp_secret

        run_until_idle()
        assert "no ESP secret stored" in account_test_action(admin_client, account)
        assert other.snapshot() == []  # not a request, so no key in any header or body
        record = SendRecord.objects.get(lead=scenario.leads[0])
        assert record.state == SendRecord.State.DEFERRED and "no ESP secret stored" in record.last_error

        # With the key entered again for this endpoint, it goes there (and the recorder sees it when it does).
        response = api.patch(f"/api/v1/accounts/{account.pk}/", {"esp_secret": API_KEY}, format="json")
        assert response.json()["has_esp_secret"] is True
        call_command("send_test", str(scenario.campaign.pk), "--to", "me@operator.test", "--account-id",
                     str(account.pk), stdout=StringIO())  # fmt: skip
        assert key_headers(other) == [{"x-postmark-server-token": API_KEY}]
        assert all(b"Authorization" not in request.raw for request in other.snapshot())


# --- AUTH over an unencrypted connection ---------------------------------------------------------------------


def new_account(api: APIClient, **fields):
    body = {"email": f"{free_port()}@plain.test", "smtp_username": "mailer", "smtp_password": PASSWORD, **fields}
    return api.post("/api/v1/accounts/", body, format="json")


def test_saving_a_password_for_plaintext_auth_to_a_remote_host_names_security(api, admin_client) -> None:
    refused = new_account(api, smtp_host="smtp.example.com", security="none")
    assert refused.status_code == 400 and "security" in refused.json(), refused.json()
    assert "SMTP_PLAINTEXT_AUTH_HOSTS" in refused.json()["security"][0] and PASSWORD not in json.dumps(refused.json())
    assert new_account(api, smtp_host="smtp.example.com", security="starttls").status_code == 201
    assert new_account(api, smtp_host="smtp.example.com", security="tls", smtp_port=465).status_code == 201
    for loopback in ("127.0.0.1", "127.8.9.10", "::1", "localhost"):
        assert new_account(api, smtp_host=loopback, security="none").status_code == 201, loopback
    assert new_account(api, smtp_host="smtp.example.com", security="none", smtp_password="").status_code == 201

    # The admin says it on the field too; an account moved to plaintext without its password just loses it.
    account = SenderAccountFactory(smtp_host="smtp.example.com", security="starttls", smtp_username="mailer",
                                   smtp_password=PASSWORD)  # fmt: skip
    response = admin_client.post(change_url(account), admin_form(account, security="none", smtp_password=PASSWORD))
    assert response.status_code == 200 and "SMTP_PLAINTEXT_AUTH_HOSTS" in str(
        response.context["adminform"].form.errors["security"]
    )
    response = admin_client.post(change_url(account), admin_form(account, security="none"))
    assert response.status_code == 302
    account.refresh_from_db()
    assert account.security == "none" and not account.smtp_password


def test_a_host_listed_in_smtp_plaintext_auth_hosts_may_take_plaintext_auth(api, settings) -> None:
    settings.SMTP_PLAINTEXT_AUTH_HOSTS = ["relay.internal.test"]
    assert new_account(api, smtp_host="Relay.Internal.Test", security="none").status_code == 201
    assert new_account(api, smtp_host="other.internal.test", security="none").status_code == 400


def test_a_stored_account_with_plaintext_auth_to_a_remote_host_is_refused_before_connecting(admin_client) -> None:
    """A row stored before the rule (or written around the forms): the decision comes before DNS and TCP, so the
    reason is the refusal, not a lookup failure of the unresolvable name."""
    scenario = campaign_scenario(smtp_port=25, accounts=1, leads=1, recipients_per_lead=1, steps=1, daily_limit=50)
    account = scenario.accounts[0]
    SenderAccount.objects.filter(pk=account.pk).update(smtp_host="smtp.plaintext.test", smtp_username="mailer")
    account.refresh_from_db()
    account.smtp_password = PASSWORD
    account.save(update_fields=["smtp_password"])

    run_until_idle()
    record = SendRecord.objects.get(lead=scenario.leads[0])
    assert record.state == SendRecord.State.DEFERRED
    assert record.last_error.startswith("AUTH over an unencrypted connection refused: smtp.plaintext.test")
    message = account_test_action(admin_client, account)
    assert "FAILED — AUTH over an unencrypted connection refused" in message
    with pytest.raises(CommandError, match="AUTH over an unencrypted connection refused"):
        call_command("test_smtp", str(account.pk), stdout=StringIO())


def test_starttls_that_the_server_does_not_offer_is_refused_before_auth(admin_client) -> None:
    with RecordingSmtpServer(any_password=True) as server:  # offers AUTH in plaintext, no STARTTLS
        account = SenderAccountFactory(smtp_port=server.port, security="starttls", smtp_username="mailer",
                                       smtp_password=PASSWORD)  # fmt: skip
        message = account_test_action(admin_client, account)
        assert "FAILED" in message and "STARTTLS extension not supported" in message
        assert server.ehlo_count == 1 and server.auth_snapshot() == []


# --- ESP endpoint overrides ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "allowed"),
    [
        ("http://127.0.0.1:8999/", True),
        ("http://localhost:1234/api/", True),
        ("https://127.0.0.1/", False),  # another scheme than the test settings list
        ("http://127.0.0.1.collector.example/", False),
        ("http://127.0.0.1@collector.example/", False),
        ("http://user:pw@127.0.0.1:8999/", False),
        ("https://collector.example/", False),
    ],
)
def test_an_esp_endpoint_must_be_in_the_allow_list(endpoint, allowed, api) -> None:
    response = api.post(
        "/api/v1/accounts/",
        {"email": f"{free_port()}@esp.test", "transport": "esp", "esp_name": "postmark", "esp_secret": API_KEY,
         "esp_endpoint_url": endpoint},
        format="json",
    )  # fmt: skip
    if allowed:
        assert response.status_code == 201, response.json()
    else:
        assert response.status_code == 400 and "esp_endpoint_url" in response.json(), response.json()
        assert "ESP_ENDPOINT_ALLOWLIST" in response.json()["esp_endpoint_url"][0]


def test_an_allow_list_entry_with_a_port_or_a_path_allows_only_that(api, settings) -> None:
    settings.ESP_ENDPOINT_ALLOWLIST = ["https://api.esp.example:8443/v3"]
    for endpoint, status in [("https://api.esp.example:8443/v3/", 201), ("https://api.esp.example:8443/v3/mail", 201),
                             ("https://api.esp.example/v3/", 400), ("https://api.esp.example:8443/v3x/", 400),
                             ("https://api.esp.example:8443/", 400)]:  # fmt: skip
        response = api.post(
            "/api/v1/accounts/",
            {"email": f"{free_port()}@esp.test", "transport": "esp", "esp_name": "postmark", "esp_secret": API_KEY,
             "esp_endpoint_url": endpoint},
            format="json",
        )  # fmt: skip
        assert response.status_code == status, (endpoint, response.json())


def test_a_stored_endpoint_outside_the_allow_list_is_refused_when_sending(admin_client, settings) -> None:
    """Production's allow-list is empty: an endpoint stored before the rule (here a loopback server that would
    answer) is refused by the sending path and by the account test, and sees no request."""
    settings.ESP_ENDPOINT_ALLOWLIST = []
    with RecordingHttpServer(reply=postmark_reply) as server:
        scenario = campaign_scenario(smtp_port=1, accounts=1, leads=1, recipients_per_lead=1, steps=1, daily_limit=50)
        account = scenario.accounts[0]
        account.transport, account.smtp_host, account.esp_name = SenderAccount.Transport.ESP, "", "postmark"
        account.esp_secret, account.esp_endpoint_url = API_KEY, server.url
        account.save()

        run_until_idle()
        record = SendRecord.objects.get(lead=scenario.leads[0])
        assert record.state == SendRecord.State.DEFERRED and "not in ESP_ENDPOINT_ALLOWLIST" in record.last_error
        assert "not in ESP_ENDPOINT_ALLOWLIST" in account_test_action(admin_client, account)
        assert server.snapshot() == []


def test_the_admin_refuses_an_endpoint_outside_the_allow_list(admin_client) -> None:
    account = SenderAccountFactory(transport="esp", esp_name="postmark", esp_secret=API_KEY)
    response = admin_client.post(change_url(account), admin_form(account, esp_endpoint_url="https://collector.example/",
                                                                 esp_secret=API_KEY))  # fmt: skip
    assert response.status_code == 200
    assert "ESP_ENDPOINT_ALLOWLIST" in str(response.context["adminform"].form.errors["esp_endpoint_url"])
    assert API_KEY not in response.content.decode()
    account.refresh_from_db()
    assert account.esp_endpoint_url == ""
