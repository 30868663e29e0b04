"""IMAP settings in the admin: the password is write-only (never on a page, kept when left empty), a change of
host, port, security or username clears it unless entered again (with a warning), plaintext to a remote host is
refused, and editing or testing needs the model's permissions."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test import Client
from django.urls import reverse

from campaigns.tests.factories import SenderAccountFactory
from emailsys.celery import app as celery_app
from processing.models import ImapAccount, Mailbox
from processing.services.imap import imap_account_create

pytestmark = pytest.mark.django_db
PASSWORD = "imap-secret-Pw-4711"


def url(name: str, *args) -> str:
    return reverse(f"admin:processing_imapaccount_{name}", args=args)


def form(account: ImapAccount, **changes) -> dict:
    data = {"sender_account": account.sender_account_id, "host": account.host, "port": account.port,
            "security": account.security, "username": account.username, "password": "", "folder": account.folder,
            "enabled": "on" if account.enabled else ""}  # fmt: skip
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


@pytest.fixture
def account(imap_server, imap_user) -> ImapAccount:
    name, password = imap_user
    return imap_account_create(
        sender_account=SenderAccountFactory(email=f"{name}@emailsys.test"), host=imap_server.host,
        port=imap_server.port, security="none", username=name, password=password,
    )  # fmt: skip


def ciphertext(account: ImapAccount) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT password FROM processing_imapaccount WHERE id = %s", [account.pk])
        return cursor.fetchone()[0]


def test_a_new_setting_stores_its_password_encrypted_and_no_page_shows_it(admin_client) -> None:
    sender = SenderAccountFactory(email="new-imap@emailsys.test")
    data = {"sender_account": sender.pk, "host": "imap.example.com", "port": 993, "security": "tls",
            "username": "new-imap", "password": PASSWORD, "folder": "INBOX", "enabled": "on"}  # fmt: skip
    assert admin_client.post(url("add"), data).status_code == 302
    saved = ImapAccount.objects.get(sender_account=sender)
    assert saved.password == PASSWORD and PASSWORD not in ciphertext(saved)
    assert (saved.mailbox.address, saved.mailbox.provider) == ("new-imap@emailsys.test", Mailbox.Provider.IMAP)
    for page in (admin_client.get(url("change", saved.pk)), admin_client.get(url("changelist"))):
        assert page.status_code == 200
        text = page.content.decode()
        assert PASSWORD not in text and ciphertext(saved) not in text
    change_page = admin_client.get(url("change", saved.pk)).content.decode()
    assert 'type="password" name="password"' in change_page and 'name="password" value=' not in change_page


def test_an_empty_password_keeps_it_and_a_host_change_clears_it_with_a_warning(admin_client, account) -> None:
    stored = account.password
    response = admin_client.post(url("change", account.pk), form(account, folder="Archive"))
    assert response.status_code == 302
    account.refresh_from_db()
    assert (account.folder, account.password) == ("Archive", stored)

    response = admin_client.post(url("change", account.pk), form(account, host="localhost"), follow=True)
    account.refresh_from_db()
    assert account.host == "localhost" and not account.password  # (an empty secret reads back as None)
    assert "IMAP password cleared because host changed" in response.content.decode()

    response = admin_client.post(url("change", account.pk), form(account, port=10143, password="again-pw"))
    assert response.status_code == 302
    account.refresh_from_db()
    assert (account.port, account.password) == (10143, "again-pw")  # entered with the change: kept

    for field, value in (("username", "someone-else"), ("security", "tls")):
        admin_client.post(url("change", account.pk), form(account, password="set-pw"))
        admin_client.post(url("change", account.pk), form(account, **{field: value}))
        account.refresh_from_db()
        assert not account.password, field


def test_plaintext_to_a_remote_host_is_refused_and_the_typed_password_not_echoed(admin_client, account) -> None:
    response = admin_client.post(url("change", account.pk), form(account, host="imap.example.com",
                                                                  password="typed-pw-9"))  # fmt: skip
    assert response.status_code == 200
    page = response.content.decode()
    assert "unencrypted connection refused" in page and "typed-pw-9" not in page
    account.refresh_from_db()
    assert account.host == "127.0.0.1"


def test_test_connection_says_ok_or_why_not(admin_client, account) -> None:
    response = admin_client.post(
        url("changelist"), {"action": "test_connection", "_selected_action": [account.pk]}, follow=True
    )
    assert "OK — logged in as" in response.content.decode()
    ImapAccount.objects.filter(pk=account.pk).update(password="wrong")
    response = admin_client.post(
        url("changelist"), {"action": "test_connection", "_selected_action": [account.pk]}, follow=True
    )
    assert "FAILED" in response.content.decode() and "AUTHENTICATIONFAILED" in response.content.decode()


def test_editing_and_the_actions_need_their_permissions(account, monkeypatch) -> None:
    sent = []
    monkeypatch.setattr(celery_app, "send_task", lambda name, **kwargs: sent.append(name))
    user = get_user_model().objects.create_user("imap-viewer", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_imapaccount"))
    client = Client()
    client.force_login(user)
    assert client.get(url("changelist")).status_code == 200
    page = client.get(url("change", account.pk)).content.decode()
    assert 'name="host"' not in page  # read-only for a viewer
    assert client.post(url("change", account.pk), form(account, host="localhost")).status_code == 403
    for action in ("test_connection", "poll_now"):
        client.post(url("changelist"), {"action": action, "_selected_action": [account.pk]})
    account.refresh_from_db()
    assert account.host == "127.0.0.1" and sent == []

    operator = get_user_model().objects.create_user("imap-operator", is_staff=True)
    operator.groups.add(Group.objects.get(name="operator"))
    client.force_login(operator)
    response = client.post(url("changelist"), {"action": "poll_now", "_selected_action": [account.pk]}, follow=True)
    assert "Poll requested for 1 IMAP mailbox" in response.content.decode()
    assert sent == ["processing.imap_poll"]
