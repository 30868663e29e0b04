"""Sender mailboxes over IMAP against a real Dovecot on loopback (emailsys/testing_imap.py): each message stored
once and queued for classification, a poll killed mid-batch goes on where it stopped, a UIDVALIDITY change
resyncs without storing anything twice or losing anything, one poll per mailbox at a time, and a broken account
(bad password, server down, TLS against a plaintext port, plaintext to a remote host) records a warning without
stopping the others."""

import threading
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from django.core.exceptions import ValidationError

from campaigns.tests.factories import SenderAccountFactory
from emailsys.celery import app as celery_app
from emailsys.ops_clients import ops_redis
from emailsys.testing import free_port
from processing.metrics import COUNTS_KEY
from processing.models import ImapAccount, InboundEmail, Mailbox
from processing.services import imap as imap_service
from processing.services.imap import imap_account_create, imap_connection_test, imap_poll, imap_poll_all_request

pytestmark = pytest.mark.django_db


def message(subject: str, *, message_id: str | None = "", to: str = "sender@emailsys.test") -> bytes:
    """An RFC 5322 message; `message_id` "" makes one, None leaves the header out."""
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "Lead <lead@example.org>", to, subject
    if message_id is not None:
        mail["Message-ID"] = message_id or make_msgid(domain="example.org")
    mail.set_content(f"Body of {subject}\n")
    return mail.as_bytes()


@pytest.fixture
def sent_tasks(monkeypatch) -> list[tuple[str, dict, str]]:
    """Every task the code under test sends (name, kwargs, queue), instead of publishing it."""
    sent: list[tuple[str, dict, str]] = []
    monkeypatch.setattr(
        celery_app, "send_task", lambda name, kwargs=None, queue=None, **_: sent.append((name, kwargs, queue))
    )
    return sent


def account_for(imap_server, user: tuple[str, str], **changes) -> ImapAccount:
    name, password = user
    settings = {"host": imap_server.host, "port": imap_server.port, "security": "none", "username": name,
                "password": password} | changes  # fmt: skip
    return imap_account_create(sender_account=SenderAccountFactory(email=f"{name}@emailsys.test"), **settings)


def subjects(account: ImapAccount) -> list[str]:
    return sorted(InboundEmail.objects.filter(mailbox=account.mailbox).values_list("subject", flat=True))


def test_a_poll_stores_each_new_message_once_and_queues_its_classification(
    imap_server, imap_user, sent_tasks, django_capture_on_commit_callbacks
) -> None:
    account = account_for(imap_server, imap_user)
    for n in range(3):
        imap_server.deliver(imap_user[0], message(f"first {n}"))
    with django_capture_on_commit_callbacks(execute=True):
        result = imap_poll(account.mailbox_id)
    assert (result.outcome, result.stored, result.last_uid, result.resynced) == ("polled", 3, 3, False)
    assert subjects(account) == ["first 0", "first 1", "first 2"]
    rows = InboundEmail.objects.filter(mailbox=account.mailbox).order_by("history_id")
    uidvalidity = imap_server.uidvalidity(imap_user[0])
    assert [row.email_id for row in rows] == [f"{uidvalidity}:{uid}" for uid in (1, 2, 3)]
    assert {row.status for row in rows} == {InboundEmail.Status.QUEUED} and all(row.received_at for row in rows)
    classify = [
        pk for name, kwargs, _ in sent_tasks if name == "processing.classify_emails" for pk in kwargs["email_pks"]
    ]
    assert sorted(classify) == sorted(row.pk for row in rows)

    assert imap_poll(account.mailbox_id).stored == 0  # nothing new: nothing stored, nothing queued
    for n in range(2):
        imap_server.deliver(imap_user[0], message(f"second {n}"))
    with django_capture_on_commit_callbacks(execute=True):
        result = imap_poll(account.mailbox_id)
    assert (result.stored, result.last_uid) == (2, 5)
    assert subjects(account) == ["first 0", "first 1", "first 2", "second 0", "second 1"]
    assert (
        len(
            [pk for name, kwargs, _ in sent_tasks if name == "processing.classify_emails" for pk in kwargs["email_pks"]]
        )
        == 5
    )
    account.refresh_from_db()
    assert (account.uidvalidity, account.last_uid, account.has_idle) == (uidvalidity, 5, True)
    # The message stays unread on the server: BODY.PEEK.
    client = imap_server.client(imap_user[0])
    client.select_folder("INBOX", readonly=True)
    assert client.search(["UNSEEN"]) == [1, 2, 3, 4, 5]
    client.logout()


def test_a_poll_interrupted_mid_batch_stores_the_rest_next_time_and_nothing_twice(
    imap_server, imap_user, monkeypatch, settings
) -> None:
    settings.IMAP_BATCH_SIZE = 4
    account = account_for(imap_server, imap_user)
    for n in range(10):
        imap_server.deliver(imap_user[0], message(f"m{n:02}"))
    real_store = imap_service.email_store
    calls = []

    def crashing_store(**kwargs):
        calls.append(1)
        if len(calls) == 6:  # the second batch, half done
            raise RuntimeError("worker killed")
        return real_store(**kwargs)

    monkeypatch.setattr(imap_service, "email_store", crashing_store)
    result = imap_poll(account.mailbox_id)
    assert (result.outcome, result.stored, result.last_uid) == ("failed", 5, 5)
    assert "UID 6" in Mailbox.objects.get(pk=account.mailbox_id).last_warning
    assert not Mailbox.objects.get(pk=account.mailbox_id).sync_lease_owner  # the lease is given back

    monkeypatch.setattr(imap_service, "email_store", real_store)
    result = imap_poll(account.mailbox_id)
    assert (result.outcome, result.stored, result.last_uid) == ("polled", 5, 10)
    assert subjects(account) == [f"m{n:02}" for n in range(10)]
    assert imap_poll(account.mailbox_id).stored == 0


def test_a_uidvalidity_change_resyncs_every_message_exactly_once_and_keeps_the_new_ones(imap_server, imap_user) -> None:
    account = account_for(imap_server, imap_user)
    for n in range(3):
        imap_server.deliver(imap_user[0], message(f"before {n}"))
    imap_server.deliver(imap_user[0], message("no message id", message_id=None))
    assert imap_poll(account.mailbox_id).stored == 4
    old = imap_server.uidvalidity(imap_user[0])

    imap_server.set_uidvalidity(imap_user[0], "INBOX", old + 1000)
    imap_server.deliver(imap_user[0], message("after 0"))
    imap_server.deliver(imap_user[0], message("after 1"))
    result = imap_poll(account.mailbox_id)
    assert (result.outcome, result.resynced, result.stored, result.duplicates) == ("polled", True, 2, 4)
    assert (result.uidvalidity, result.last_uid) == (old + 1000, 6)
    assert subjects(account) == ["after 0", "after 1", "before 0", "before 1", "before 2", "no message id"]
    message_ids = list(InboundEmail.objects.filter(mailbox=account.mailbox).values_list("message_id", flat=True))
    assert len(message_ids) == len(set(message_ids)) == 6 - 1 + 1  # five distinct ids and the one without
    assert "UIDVALIDITY of INBOX changed" in Mailbox.objects.get(pk=account.mailbox_id).last_warning

    imap_server.deliver(imap_user[0], message("later"))
    result = imap_poll(account.mailbox_id)
    assert (result.resynced, result.stored, result.duplicates, result.last_uid) == (False, 1, 0, 7)
    assert len(subjects(account)) == 7


def test_a_lost_server_index_renumbers_the_folder_and_still_nothing_is_stored_twice_or_lost(
    imap_server, imap_user
) -> None:
    account = account_for(imap_server, imap_user)
    for n in range(5):
        imap_server.deliver(imap_user[0], message(f"old {n}"))
    assert imap_poll(account.mailbox_id).last_uid == 5
    imap_server.expunge(imap_user[0], 2)  # "old 1" goes: the survivors get other UIDs than before
    new_uidvalidity = imap_server.renumber(imap_user[0])
    imap_server.deliver(imap_user[0], message("new 0"))  # UID 5 again, under the new UIDVALIDITY
    result = imap_poll(account.mailbox_id)
    assert (result.resynced, result.uidvalidity, result.stored, result.duplicates) == (True, new_uidvalidity, 1, 4)
    assert result.last_uid == 5
    assert subjects(account) == ["new 0", "old 0", "old 1", "old 2", "old 3", "old 4"]


def test_a_resync_interrupted_midway_still_stores_each_message_once(imap_server, imap_user, monkeypatch) -> None:
    account = account_for(imap_server, imap_user)
    for n in range(4):
        imap_server.deliver(imap_user[0], message(f"kept {n}"))
    imap_poll(account.mailbox_id)
    imap_server.set_uidvalidity(imap_user[0], "INBOX", imap_server.uidvalidity(imap_user[0]) + 7)
    imap_server.deliver(imap_user[0], message("new 0"))
    imap_server.deliver(imap_user[0], message("new 1"))
    real_store = imap_service.email_store

    def crash_on_the_second_new(**kwargs):
        if kwargs["message"].history_id == 6:
            raise RuntimeError("killed")
        return real_store(**kwargs)

    monkeypatch.setattr(imap_service, "email_store", crash_on_the_second_new)
    assert imap_poll(account.mailbox_id).outcome == "failed"
    monkeypatch.setattr(imap_service, "email_store", real_store)
    result = imap_poll(account.mailbox_id)
    assert (result.resynced, result.stored, result.last_uid) == (False, 1, 6)
    assert subjects(account) == ["kept 0", "kept 1", "kept 2", "kept 3", "new 0", "new 1"]


@pytest.mark.django_db(transaction=True)
def test_two_polls_racing_on_one_mailbox_one_holds_the_lease_and_nothing_is_stored_twice(
    imap_server, imap_user, monkeypatch, sent_tasks
) -> None:
    account = account_for(imap_server, imap_user)
    for n in range(5):
        imap_server.deliver(imap_user[0], message(f"race {n}"))
    inside, release = threading.Event(), threading.Event()
    real_store = imap_service.email_store

    def slow_store(**kwargs):
        inside.set()
        assert release.wait(20)
        return real_store(**kwargs)

    monkeypatch.setattr(imap_service, "email_store", slow_store)
    results = []
    first = threading.Thread(target=lambda: results.append(imap_poll(account.mailbox_id)))
    first.start()
    try:
        assert inside.wait(20)
        # Meanwhile a new message arrives (after the first poll's search) and IDLE asks for a poll, on another host.
        imap_server.deliver(imap_user[0], message("race 5"))
        second = imap_poll(account.mailbox_id)
        assert second.outcome == "busy" and second.stored == 0
    finally:
        release.set()
        first.join(30)
    # The holder went round once more for the poll that found it busy: nothing left for beat.
    assert results[0].outcome == "polled" and results[0].stored == 6
    assert subjects(account) == [f"race {n}" for n in range(6)]
    assert imap_poll(account.mailbox_id).stored == 0


def test_broken_accounts_record_a_warning_and_the_others_are_still_polled(imap_server, sent_tasks) -> None:
    good_user = imap_server.add_user("good-" + free_port().__str__(), "right")
    bad_user = imap_server.add_user("bad-" + free_port().__str__(), "right")
    imap_server.deliver(good_user, message("for the good one"))
    imap_server.deliver(bad_user, message("never read"))
    good = account_for(imap_server, (good_user, "right"))
    wrong_password = account_for(imap_server, (bad_user, "wrong"))
    server_down = account_for(imap_server, ("down-user", "pw"), port=free_port())
    bad_tls = account_for(imap_server, ("tls-user", "pw"), security="tls")

    ops_redis().delete(COUNTS_KEY)
    assert imap_poll_all_request() == 4
    polled = [kwargs["mailbox_id"] for name, kwargs, queue in sent_tasks if name == "processing.imap_poll"]
    assert {queue for name, _, queue in sent_tasks} == {"inbound_backfill"}
    results = {mailbox_id: imap_poll(mailbox_id) for mailbox_id in polled}  # as the worker runs the tasks

    assert results[good.mailbox_id].stored == 1 and subjects(good) == ["for the good one"]
    for broken, expected in ((wrong_password, "LoginError"), (server_down, "Connection refused"),
                             (bad_tls, "SSL")):  # fmt: skip
        assert results[broken.mailbox_id].outcome == "failed", broken
        warning = Mailbox.objects.get(pk=broken.mailbox_id).last_warning
        assert warning.startswith("IMAP connection failed") and expected in warning, warning
        assert not InboundEmail.objects.filter(mailbox=broken.mailbox).exists()
    assert not Mailbox.objects.get(pk=good.mailbox_id).last_warning
    assert int(ops_redis().hget(COUNTS_KEY, "imap_failed\x1f")) == 3  # /metrics: emailsys_inbound_emails

    ok, detail = imap_connection_test(account=good)
    assert ok and "IDLE yes" in detail, detail
    ok, detail = imap_connection_test(account=wrong_password)
    assert not ok and "LoginError" in detail

    # Fixed: the next poll reads it and the warning goes.
    ImapAccount.objects.filter(pk=wrong_password.pk).update(password="right")
    assert imap_poll(wrong_password.mailbox_id).stored == 1
    assert not Mailbox.objects.get(pk=wrong_password.mailbox_id).last_warning


def test_tls_and_starttls_log_in_when_the_certificate_is_trusted_and_fail_with_a_warning_when_not(
    imap_server, imap_user, monkeypatch
) -> None:
    name, password = imap_user
    imap_server.deliver(name, message("over TLS"))
    monkeypatch.setenv("SSL_CERT_FILE", str(imap_server.ca_file))  # the test CA, as an operator's CA bundle
    tls = account_for(imap_server, imap_user, port=imap_server.tls_port, security="tls")
    starttls = imap_account_create(sender_account=SenderAccountFactory(), host="localhost", port=imap_server.port,
                                   security="starttls", username=name, password=password)  # fmt: skip
    for account in (tls, starttls):
        ok, detail = imap_connection_test(account=account)
        assert ok, detail
        result = imap_poll(account.mailbox_id)
        assert (result.outcome, result.stored) == ("polled", 1), result
        assert subjects(account) == ["over TLS"]

    monkeypatch.delenv("SSL_CERT_FILE")  # the system's CAs only: the server's certificate is not trusted
    imap_server.deliver(name, message("not read"))
    for account in (tls, starttls):
        result = imap_poll(account.mailbox_id)
        assert result.outcome == "failed" and "CERTIFICATE_VERIFY_FAILED" in result.error, result
        assert "CERTIFICATE_VERIFY_FAILED" in Mailbox.objects.get(pk=account.mailbox_id).last_warning
        assert subjects(account) == ["over TLS"]


def test_a_login_without_tls_to_a_remote_host_is_refused_before_connecting(imap_server, imap_user) -> None:
    with pytest.raises(ValidationError, match="unencrypted"):
        imap_account_create(sender_account=SenderAccountFactory(), host="imap.example.com", port=143,
                            security="none", username="someone", password="pw")  # fmt: skip
    account = account_for(imap_server, imap_user)
    ImapAccount.objects.filter(pk=account.pk).update(host="imap.example.com")  # written around the forms
    result = imap_poll(account.mailbox_id)
    assert result.outcome == "failed" and "unencrypted connection refused" in result.error
    account.refresh_from_db()
    assert account.uidvalidity is None  # it never connected


def test_a_disabled_account_is_not_polled(imap_server, imap_user, sent_tasks) -> None:
    account = account_for(imap_server, imap_user, enabled=False)
    imap_server.deliver(imap_user[0], message("waits"))
    assert imap_poll(account.mailbox_id).outcome == "disabled"
    assert imap_poll_all_request() == 0
    assert not InboundEmail.objects.exists()


def test_a_simulator_message_to_an_imap_account_is_taken_but_not_connected(settings, client) -> None:
    """The simulator's autoconnect leaves a mailbox read over IMAP alone (it has no webhook to subscribe)."""
    settings.INBOUND_SIMULATOR_AUTOCONNECT = True
    mailbox = Mailbox.objects.create(address="imap-owned@example.com", provider=Mailbox.Provider.IMAP)
    answer = client.post(
        "/simulator/send_email",
        {"from": "a@example.org", "to": "imap-owned@example.com", "subject": "s", "body": "b"},
        content_type="application/json",
    )
    assert answer.status_code == 201, answer.content
    mailbox.refresh_from_db()
    assert mailbox.provider == Mailbox.Provider.IMAP and not mailbox.webhook_secret
