"""The sync rules against a provider that behaves as the interface says (history with gaps, expiry, messages that
vanish or break): each message stored once, a cursor that only moves forward, one sync at a time per mailbox with
later notifications coalesced, a poison entry skipped after 3 failures, a bounded resync on expired history."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from django.utils import timezone

from processing.models import InboundEmail, Mailbox
from processing.providers import (
    HistoryEntry,
    HistoryExpired,
    HistoryPage,
    MessageGone,
    MessageRef,
    ProviderError,
    ProviderMessage,
)
from processing.services.ingest import email_store
from processing.services.sync import cursor_advance, mailbox_sync

pytestmark = pytest.mark.django_db
ADDRESS = "inbox@example.com"


class HistoryProvider:
    """An in-memory provider mailbox (the MailProvider interface): numbered history entries, a retention, pages of
    `page_size`, and hooks that run inside a call (to make things happen mid-sync)."""

    def __init__(self, *, page_size: int = 3) -> None:
        self.entries: list[HistoryEntry] = []
        self.messages: dict[str, ProviderMessage] = {}
        self.current = 0
        self.oldest = 0  # history before this id is forgotten (404 / HistoryExpired)
        self.page_size = page_size
        self.broken: dict[str, Exception] = {}  # email id → what fetching it raises
        self.on_fetch: Callable[[str], None] | None = None
        self.on_recent: Callable[[], None] | None = None
        self.history_calls = 0
        self.fetches: list[str] = []

    def add(self, subject: str, *, history_id: int | None = None) -> ProviderMessage:
        self.current = history_id if history_id is not None else self.current + 1
        email_id = f"m{self.current}"
        mail = EmailMessage()
        mail["From"], mail["To"], mail["Subject"] = "Ann <ann@example.org>", ADDRESS, subject
        mail.set_content(f"Body of {subject}")
        message = ProviderMessage(email_id, self.current, mail.as_bytes(), datetime.now(tz=UTC))
        self.messages[email_id] = message
        self.entries.append(HistoryEntry(self.current, (email_id,)))
        return message

    def current_history_id(self, address: str) -> int:
        return self.current

    def history_since(self, address: str, start_history_id: int, *, page_token: str | None = None) -> HistoryPage:
        self.history_calls += 1
        if start_history_id < self.oldest - 1:
            raise HistoryExpired(f"{start_history_id} is older than {self.oldest}")
        after = [entry for entry in self.entries if entry.history_id > start_history_id]
        offset = int(page_token or 0)
        page = after[offset : offset + self.page_size]
        more = offset + self.page_size < len(after)
        return HistoryPage(tuple(page), self.current, str(offset + self.page_size) if more else None)

    def recent_messages(self, address: str, *, limit: int) -> list[MessageRef]:
        refs = [
            MessageRef(m.email_id, m.history_id) for m in sorted(self.messages.values(), key=lambda m: -m.history_id)
        ]
        if self.on_recent:
            hook, self.on_recent = self.on_recent, None
            hook()
        return refs[:limit]

    def fetch_message(self, address: str, email_id: str) -> ProviderMessage:
        self.fetches.append(email_id)
        if self.on_fetch:
            self.on_fetch(email_id)
        if email_id in self.broken:
            raise self.broken[email_id]
        if email_id not in self.messages:
            raise MessageGone(email_id)
        return self.messages[email_id]

    def fetch_messages(self, address: str, email_ids) -> dict:
        """As the simulator's client: a provider error fails the call, any other error only its message."""
        found = {}
        for email_id in email_ids:
            try:
                found[email_id] = self.fetch_message(address, email_id)
            except MessageGone:
                continue
            except ProviderError:
                raise
            except Exception as error:  # noqa: BLE001 - the message's own failure, as the client reports it
                found[email_id] = error
        return found

    def watch(self, address: str, *, url: str, secret: str) -> int:
        return self.current


@pytest.fixture
def provider() -> HistoryProvider:
    return HistoryProvider()


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox.objects.create(address=ADDRESS, webhook_secret="whsec_dGVzdA==")


def stored(mailbox: Mailbox) -> list[str]:
    return sorted(mailbox.emails.values_list("subject", flat=True))


def sync(mailbox: Mailbox, provider: HistoryProvider, source: str = "webhook") -> Mailbox:
    """A sync as a notification of the provider's newest id (source webhook) or the fallback (backfill) asks."""
    if source == "webhook":
        Mailbox.objects.filter(pk=mailbox.pk, wanted_history_id__lt=provider.current).update(
            wanted_history_id=provider.current
        )
    mailbox_sync(mailbox_id=mailbox.pk, source=source, provider=provider)
    mailbox.refresh_from_db()
    return mailbox


def test_first_sync_is_full_then_history_from_the_cursor(mailbox, provider) -> None:
    for n in range(4):
        provider.add(f"old {n}")
    sync(mailbox, provider, source="backfill")
    assert stored(mailbox) == ["old 0", "old 1", "old 2", "old 3"]
    assert mailbox.last_history_id == 4 and mailbox.provider_history_id == 4 and mailbox.last_synced_at
    assert set(mailbox.emails.values_list("source", flat=True)) == {"backfill"}

    provider.add("new a")
    provider.add("new b")
    Mailbox.objects.filter(pk=mailbox.pk).update(wanted_history_id=6)
    sync(mailbox, provider)
    assert stored(mailbox) == ["new a", "new b", "old 0", "old 1", "old 2", "old 3"]
    assert mailbox.last_history_id == 6
    assert set(mailbox.emails.filter(history_id__gt=4).values_list("source", flat=True)) == {"webhook"}
    assert not mailbox.last_warning


def test_a_message_is_stored_once_however_often_it_is_delivered(mailbox, provider, django_capture_on_commit_callbacks):
    message = provider.add("hello")
    with django_capture_on_commit_callbacks() as callbacks:
        first = email_store(mailbox=mailbox, message=message, source="webhook")
        again = email_store(mailbox=mailbox, message=message, source="backfill")
    assert first is not None and first.pk and again is None
    assert len(callbacks) == 1  # one classification enqueued
    row = InboundEmail.objects.get()
    assert (row.subject, row.sender, row.sender_name, row.recipients) == ("hello", "ann@example.org", "Ann", [ADDRESS])
    assert bytes(row.raw) == message.raw and row.status == "queued"


def test_broken_headers_are_stored_with_the_raw_bytes_and_a_parse_error(mailbox) -> None:
    raw = b"From: \x00<bad\r\nSubject: " + b"x" * 2000 + b"\r\nDate: not a date\r\n\r\nbody\xff\r\n"
    row = email_store(mailbox=mailbox, message=ProviderMessage("odd", 1, raw, timezone.now()), source="webhook")
    row.refresh_from_db()
    assert bytes(row.raw) == raw and row.sent_at is None
    assert "\x00" not in row.sender


def test_gaps_in_history_ids_and_several_pages(mailbox, provider) -> None:
    Mailbox.objects.filter(pk=mailbox.pk).update(last_history_id=0)
    for history_id in (3, 10, 11, 40, 41, 97, 200):
        provider.add(f"at {history_id}", history_id=history_id)
    Mailbox.objects.filter(pk=mailbox.pk).update(wanted_history_id=200)
    sync(mailbox, provider)
    assert mailbox.emails.count() == 7 and mailbox.last_history_id == 200
    assert provider.history_calls == 3  # three pages of one listing; the cursor reached the wanted id: done


def test_a_slower_older_sync_never_moves_the_cursor_back(mailbox, provider) -> None:
    """Sync A's lease expires while it is stuck on a fetch; sync B takes over and gets to 10; A then resumes: the
    cursor stays at 10 (and A, its lease lost, stops)."""
    Mailbox.objects.filter(pk=mailbox.pk).update(last_history_id=0)
    for n in range(10):
        provider.add(f"m {n}")

    def stuck_then_overtaken(email_id: str) -> None:
        provider.on_fetch = None
        Mailbox.objects.filter(pk=mailbox.pk).update(sync_lease_until=timezone.now() - timedelta(seconds=1))
        mailbox_sync(mailbox_id=mailbox.pk, source="backfill", provider=provider)  # B, to the end
        assert Mailbox.objects.get(pk=mailbox.pk).last_history_id == 10

    provider.on_fetch = stuck_then_overtaken
    sync(mailbox, provider)  # A
    assert mailbox.last_history_id == 10
    assert not cursor_advance(mailbox_id=mailbox.pk, history_id=1)
    assert Mailbox.objects.get(pk=mailbox.pk).last_history_id == 10
    assert mailbox.emails.count() == 10 and not mailbox.sync_lease_owner


def test_a_sync_that_cannot_take_the_lease_returns_and_the_holder_takes_the_later_mail(mailbox, provider) -> None:
    Mailbox.objects.filter(pk=mailbox.pk).update(last_history_id=0)
    provider.add("first")

    def mail_arrives_mid_sync(email_id: str) -> None:
        if email_id != "m1":
            return
        for n in range(3):  # three notifications while the lease is held: each sync they ask for returns
            message = provider.add(f"later {n}")
            Mailbox.objects.filter(pk=mailbox.pk).update(wanted_history_id=message.history_id)
            calls = provider.history_calls
            mailbox_sync(mailbox_id=mailbox.pk, source="webhook", provider=provider)
            assert provider.history_calls == calls  # it did not touch the provider

    provider.on_fetch = mail_arrives_mid_sync
    Mailbox.objects.filter(pk=mailbox.pk).update(wanted_history_id=1)
    sync(mailbox, provider)
    assert stored(mailbox) == ["first", "later 0", "later 1", "later 2"]
    assert mailbox.last_history_id == 4 and not mailbox.sync_lease_owner


def test_a_notification_during_a_sync_queues_no_task_and_the_holder_goes_round_for_it(
    mailbox, provider, django_capture_on_commit_callbacks
) -> None:
    """Under load one sync runs on: a notification that finds the lease held raises the wanted id only, and the
    holder, reading it after giving the lease back, syncs again for it."""
    from emailsys.metrics import queue_depths
    from processing.services.sync import mailbox_notify

    Mailbox.objects.filter(pk=mailbox.pk).update(last_history_id=0, wanted_history_id=1)
    provider.add("first")
    before = queue_depths(queues=["inbound"])["inbound"]

    def mail_arrives_mid_sync(email_id: str) -> None:
        if email_id == "m1":
            message = provider.add("announced while the lease was held")
            with django_capture_on_commit_callbacks(execute=True):
                assert mailbox_notify(mailbox=mailbox, history_id=message.history_id, webhook_id=f"mid-{mailbox.pk}")

    provider.on_fetch = mail_arrives_mid_sync
    sync(mailbox, provider)
    assert stored(mailbox) == ["announced while the lease was held", "first"]
    assert mailbox.last_history_id == 2 and not mailbox.sync_lease_owner
    assert queue_depths(queues=["inbound"])["inbound"] == before  # no sync task was asked for


def test_a_lease_is_taken_over_only_after_it_expired(mailbox, provider) -> None:
    Mailbox.objects.filter(pk=mailbox.pk).update(last_history_id=0, wanted_history_id=1)
    provider.add("waiting")
    held = timezone.now() + timedelta(seconds=30)
    Mailbox.objects.filter(pk=mailbox.pk).update(sync_lease_owner="dead-host:1", sync_lease_until=held)
    assert sync(mailbox, provider).emails.count() == 0
    Mailbox.objects.filter(pk=mailbox.pk).update(sync_lease_until=timezone.now() - timedelta(seconds=1))
    assert sync(mailbox, provider).emails.count() == 1
    assert mailbox.last_history_id == 1 and mailbox.sync_lease_owner == ""


def test_a_poison_entry_is_skipped_after_three_failures_with_a_warning(mailbox, provider) -> None:
    Mailbox.objects.filter(pk=mailbox.pk).update(last_history_id=0)
    provider.add("fine")
    provider.add("poison")
    provider.add("after")
    provider.broken["m2"] = ValueError("cannot decode")
    for attempt in (1, 2):
        with pytest.raises(ValueError):
            sync(mailbox, provider)
        mailbox.refresh_from_db()
        assert (mailbox.last_history_id, mailbox.poison_history_id, mailbox.poison_attempts) == (1, 2, attempt)
    sync(mailbox, provider)
    assert stored(mailbox) == ["after", "fine"] and mailbox.last_history_id == 3
    assert "History entry 2 skipped after 3 failures" in mailbox.last_warning and mailbox.last_warning_at


def test_a_provider_outage_never_makes_an_entry_poison(mailbox, provider) -> None:
    Mailbox.objects.filter(pk=mailbox.pk).update(last_history_id=0)
    provider.add("delayed")
    provider.broken["m1"] = ProviderError("503")
    for _ in range(5):
        with pytest.raises(ProviderError):
            sync(mailbox, provider)
    mailbox.refresh_from_db()
    assert mailbox.last_history_id == 0 and mailbox.emails.count() == 0
    del provider.broken["m1"]
    assert stored(sync(mailbox, provider)) == ["delayed"]


def test_a_message_deleted_before_the_fetch_is_skipped(mailbox, provider) -> None:
    Mailbox.objects.filter(pk=mailbox.pk).update(last_history_id=0)
    provider.add("gone")
    provider.add("kept")
    del provider.messages["m1"]
    assert stored(sync(mailbox, provider)) == ["kept"]
    assert mailbox.last_history_id == 2 and not mailbox.last_warning


def test_expired_history_resyncs_from_the_current_id_read_first(mailbox, provider, settings) -> None:
    settings.INBOUND_RESYNC_LIMIT = 5
    for n in range(8):
        provider.add(f"m {n}")
    Mailbox.objects.filter(pk=mailbox.pk).update(last_history_id=2)  # m 0, m 1 stored before
    email_store(mailbox=mailbox, message=provider.messages["m1"], source="webhook")
    email_store(mailbox=mailbox, message=provider.messages["m2"], source="webhook")
    provider.oldest = 6  # entries 3..5 forgotten: only the newest 5 messages can still be read

    def arrives_during_resync() -> None:
        message = provider.add("during")
        Mailbox.objects.filter(pk=mailbox.pk).update(wanted_history_id=message.history_id)

    provider.on_recent = arrives_during_resync
    sync(mailbox, provider)
    assert stored(mailbox) == ["during", "m 0", "m 1", "m 3", "m 4", "m 5", "m 6", "m 7"]
    assert mailbox.last_history_id == 9 and mailbox.provider_history_id == 9
    assert mailbox.last_warning.startswith("Resynced: history from 2 expired")
    assert set(mailbox.emails.filter(history_id__in=range(4, 9)).values_list("source", flat=True)) == {"backfill"}


def test_a_notification_for_an_id_the_history_does_not_have_does_not_spin(mailbox, provider) -> None:
    Mailbox.objects.filter(pk=mailbox.pk).update(last_history_id=0, wanted_history_id=10**9)
    provider.add("only")
    sync(mailbox, provider)
    assert mailbox.emails.count() == 1 and provider.history_calls == 2


def test_a_notification_already_covered_by_the_last_sync_reads_nothing(mailbox, provider) -> None:
    Mailbox.objects.filter(pk=mailbox.pk).update(last_history_id=5, wanted_history_id=5)
    mailbox_sync(mailbox_id=mailbox.pk, source="webhook", provider=provider)
    assert provider.history_calls == 0
    mailbox_sync(mailbox_id=mailbox.pk, source="backfill", provider=provider)  # the fallback always looks
    assert provider.history_calls == 1


def test_a_burst_of_notifications_queues_one_sync_until_it_starts(
    mailbox, provider, django_capture_on_commit_callbacks
) -> None:
    """Five notifications while no sync has started: one task in the inbound queue (it reads the wanted id when it
    runs, so it covers all five). Once it started, the next notification queues the next sync."""
    from emailsys.metrics import queue_depths
    from processing.services.sync import mailbox_notify

    Mailbox.objects.filter(pk=mailbox.pk).update(last_history_id=0)

    def queued() -> int:
        return queue_depths(queues=["inbound"])["inbound"]

    before = queued()
    with django_capture_on_commit_callbacks(execute=True):
        for n in range(1, 6):
            assert mailbox_notify(mailbox=mailbox, history_id=n, webhook_id=f"burst-{mailbox.pk}-{n}")
    assert queued() == before + 1
    assert Mailbox.objects.get(pk=mailbox.pk).wanted_history_id == 5

    for n in range(5):
        provider.add(f"m {n}")
    mailbox_sync(mailbox_id=mailbox.pk, source="webhook", provider=provider)  # the queued sync, run here
    assert Mailbox.objects.get(pk=mailbox.pk).last_history_id == 5
    with django_capture_on_commit_callbacks(execute=True):
        assert mailbox_notify(mailbox=mailbox, history_id=6, webhook_id=f"burst-{mailbox.pk}-6")
        assert not mailbox_notify(mailbox=mailbox, history_id=6, webhook_id=f"burst-{mailbox.pk}-6")  # a duplicate
    assert queued() == before + 2


def test_the_sync_classifies_what_it_stored_and_its_safety_net_tasks_come_later(
    mailbox, provider, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    """A page's messages have their results when the sync returns (no task to wait for); the tasks enqueued behind
    them are due later and only for messages nobody attempted."""
    from emailsys.celery import app as celery_app
    from processing.services.ingest import SAFETY_NET_SECONDS

    sent: list[tuple[str, dict, dict]] = []
    monkeypatch.setattr(
        celery_app, "send_task", lambda name, kwargs=None, **options: sent.append((name, kwargs, options))
    )
    Mailbox.objects.filter(pk=mailbox.pk).update(last_history_id=0)
    for n in range(4):
        provider.add(f"Lunch on Friday? {n}")
    with django_capture_on_commit_callbacks(execute=True):
        sync(mailbox, provider)
    rows = InboundEmail.objects.filter(mailbox=mailbox)
    assert rows.count() == 4
    assert all(row.status == "classified" and row.result.classification for row in rows.select_related("result"))
    classify_tasks = [(kwargs, options) for name, kwargs, options in sent if name == "processing.classify_emails"]
    assert sorted(pk for kwargs, _ in classify_tasks for pk in kwargs["email_pks"]) == sorted(
        rows.values_list("pk", flat=True)
    )
    assert all(
        kwargs["unattempted_only"] and options["countdown"] == SAFETY_NET_SECONDS for kwargs, options in classify_tasks
    )


def test_the_safety_net_classifies_only_what_nobody_attempted(mailbox, provider) -> None:
    """What a sync stored and could not classify (it died first) is classified by the safety-net batch; a message
    whose attempt failed is left to its own retries, a classified one is not classified again."""
    from processing.models import EmailResult
    from processing.services.classify import emails_classify

    left, failed, done = (email_store(mailbox=mailbox, message=provider.add(subject), source="webhook")
                          for subject in ("left behind", "failed once", "already done"))  # fmt: skip
    InboundEmail.objects.filter(pk=failed.pk).update(attempts=1)
    assert emails_classify(email_pks=[done.pk]) == []
    first = EmailResult.objects.get(email=done)

    assert emails_classify(email_pks=[left.pk, failed.pk, done.pk], unattempted_only=True) == []
    assert set(EmailResult.objects.values_list("email_id", flat=True)) == {left.pk, done.pk}
    assert EmailResult.objects.get(email=done).processed_at == first.processed_at
