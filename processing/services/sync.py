"""History sync: notifications raise a mailbox's wanted id; one sync at a time per mailbox reads the provider's
history from the cursor up, stores each message once and advances the cursor forward only.

The rules:
- `mailbox_notify` records a webhook delivery once (by webhook id), raises `wanted_history_id` to the highest id
  announced, and asks for a sync when the cursor is behind it.
- `mailbox_sync(mailbox_id, source)` runs under the mailbox's lease (INBOUND_SYNC_LEASE_SECONDS), loops until the
  cursor reaches the wanted id, stores messages with `email_store`, advances the cursor with a conditional UPDATE
  (`WHERE last_history_id < new`), skips a poison entry after INBOUND_POISON_ATTEMPTS with a warning, resyncs
  (bounded by INBOUND_RESYNC_LIMIT, from `current_history_id()` read first) on HistoryExpired or a None cursor.
"""

import logging
import os
import socket
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Greatest
from django.utils import timezone

from emailsys.celery import app as celery_app
from processing.models import InboundEmail, Mailbox, WebhookReceipt
from processing.providers import FetchedMessages, HistoryEntry, HistoryExpired, MailProvider, provider_for
from processing.services.classify import emails_classify_stored
from processing.services.ingest import QUEUE_FOR_SOURCE, email_store, emails_requeue_stalled, emails_store_to_classify

logger = logging.getLogger(__name__)
SYNC_QUEUED_SECONDS = 15
FETCH_BATCH = 100  # history entries whose messages are fetched in one call


def sync_request(*, mailbox_id: int, source: str) -> None:
    """Enqueues a sync of the mailbox (source "webhook": the fresh queue; "backfill": the backfill queue). A webhook
    asks only when no sync of the mailbox is queued yet: the queued one reads the wanted id after it starts, so it
    covers this notification too (one task per burst, not one per message)."""
    if source == "webhook" and not _sync_queued_mark(mailbox_id):
        return
    queue = "inbound" if source == "webhook" else "inbound_backfill"
    # By name: processing.tasks imports the services, never the other way round.
    celery_app.send_task(
        "processing.sync_mailbox", kwargs={"mailbox_id": mailbox_id, "source": source}, queue=queue, ignore_result=True
    )


def _sync_queued_key(mailbox_id: int) -> str:
    return f"emailsys:inbound:sync-queued:{mailbox_id}"


def _sync_queued_mark(mailbox_id: int) -> bool:
    """True when no webhook sync of the mailbox was queued (and one is now marked). The mark expires after
    SYNC_QUEUED_SECONDS, so a task the broker lost delays the next sync by that much at most (and the fallback sync
    runs anyway); without Redis every notification enqueues."""
    from emailsys.ops_clients import ops_redis

    try:
        return bool(ops_redis().set(_sync_queued_key(mailbox_id), "1", nx=True, ex=SYNC_QUEUED_SECONDS))
    except Exception:  # noqa: BLE001 - a sync too many costs little; one too few would wait for the fallback
        return True


def _sync_queued_clear(mailbox_id: int) -> None:
    """A webhook sync starts: a notification from now on queues another one (this one may have read past it)."""
    from emailsys.ops_clients import ops_redis

    try:
        ops_redis().delete(_sync_queued_key(mailbox_id))
    except Exception:  # noqa: BLE001 - the mark expires by itself
        logger.warning("could not clear the queued-sync mark of mailbox %s", mailbox_id)


_NOTIFY_SQL = """
WITH receipt AS (
    INSERT INTO {receipts} (webhook_id, mailbox_id, history_id, received_at) VALUES (%s, %s, %s, %s)
    ON CONFLICT (webhook_id) DO NOTHING RETURNING 1
), raised AS (
    UPDATE {mailboxes} SET wanted_history_id = GREATEST(wanted_history_id, %s)
    WHERE id = %s AND EXISTS (SELECT 1 FROM receipt) RETURNING last_history_id, sync_lease_until
)
SELECT EXISTS (SELECT 1 FROM receipt), (SELECT last_history_id FROM raised), (SELECT sync_lease_until FROM raised)
"""


def mailbox_notify(*, mailbox: Mailbox, history_id: int, webhook_id: str) -> bool:
    """A verified notification. False when this webhook id was seen before (nothing happens); otherwise the
    wanted id rises to `history_id` if higher and a sync is requested when the cursor is behind and no sync holds
    the mailbox's lease (that one reads the wanted id after each pass, and after giving the lease back: the raise
    and the give-back are updates of the same row, so one of the two sees the other). One statement: the webhook
    answers in a round trip to PostgreSQL, not five."""
    sql = _NOTIFY_SQL.format(
        receipts=connection.ops.quote_name(WebhookReceipt._meta.db_table),
        mailboxes=connection.ops.quote_name(Mailbox._meta.db_table),
    )
    try:  # one statement is a transaction of its own: no BEGIN and COMMIT round trips around it
        with connection.cursor() as cursor:
            cursor.execute(sql, [webhook_id, mailbox.pk, history_id, timezone.now(), history_id, mailbox.pk])
            new, cursor_id, lease_until = cursor.fetchone()
    except IntegrityError:  # the mailbox was deleted meanwhile: nothing to sync
        return False
    if not new:
        return False
    if lease_until is not None and lease_until > timezone.now():
        return True  # a sync runs: it goes round again for this id (under load, one long sync, no task per webhook)
    if cursor_id is None or cursor_id < history_id:
        transaction.on_commit(lambda: sync_request(mailbox_id=mailbox.pk, source="webhook"))
    return True


def mailbox_sync(*, mailbox_id: int, source: str, provider: MailProvider | None = None) -> None:
    """Syncs the mailbox under its lease, or returns at once when another sync holds it (that one loops: a
    notification that arrived meanwhile raised the wanted id, and the holder goes round again for it).
    `provider` replaces the mailbox's own client (tests)."""
    if source == InboundEmail.Source.WEBHOOK:  # coalesced: the sync that held the lease already got this far
        _sync_queued_clear(mailbox_id)
        cursor, wanted = Mailbox.objects.filter(pk=mailbox_id).values_list("last_history_id", "wanted_history_id")[0]
        if cursor is not None and cursor >= wanted:
            return
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:100]
    while True:
        mailbox = lease_take(mailbox_id, owner)
        if mailbox is None:
            return
        wanted_before = mailbox.wanted_history_id
        try:
            progressed = _sync_pass(mailbox, provider or provider_for(mailbox), source=source, owner=owner)
        finally:
            Mailbox.objects.filter(pk=mailbox_id, sync_lease_owner=owner).update(
                sync_lease_owner="", sync_lease_until=None
            )
        # Read after giving the lease back: a notification that saw the lease held asked for no sync of its own.
        cursor, wanted = Mailbox.objects.filter(pk=mailbox_id).values_list("last_history_id", "wanted_history_id")[0]
        if cursor is not None and cursor >= wanted:
            return
        # Again while a notification announced more than we have; a pass that found nothing new ends it unless a
        # notification came meanwhile (an id announced but not (yet) in the history must not spin: the next
        # notification or the fallback sync comes).
        if not progressed and wanted == wanted_before:
            return


def fallback_sync_request() -> int:
    """Asks for a backfill sync of every enabled mailbox, so a lost notification is caught within the fallback
    interval (the sync reads the history from the cursor, whatever the notifications said), and enqueues again the
    stored messages whose classification task was lost; returns how many mailboxes."""
    # IMAP mailboxes have their own poll (services/imap.py, "processing: IMAP poll").
    mailboxes = Mailbox.objects.filter(enabled=True).exclude(provider=Mailbox.Provider.IMAP)
    mailbox_ids = list(mailboxes.values_list("pk", flat=True))
    for mailbox_id in mailbox_ids:
        sync_request(mailbox_id=mailbox_id, source=InboundEmail.Source.BACKFILL)
    emails_requeue_stalled(older_than_seconds=settings.INBOUND_STALLED_SECONDS)
    return len(mailbox_ids)


def lease_take(mailbox_id: int, owner: str) -> Mailbox | None:
    now = timezone.now()
    taken = (
        Mailbox.objects.filter(pk=mailbox_id, enabled=True)
        .filter(Q(sync_lease_until__isnull=True) | Q(sync_lease_until__lt=now))
        .update(sync_lease_owner=owner, sync_lease_until=now + timedelta(seconds=settings.INBOUND_SYNC_LEASE_SECONDS))
    )  # fmt: skip
    return Mailbox.objects.filter(pk=mailbox_id).first() if taken else None


def lease_renew(mailbox_id: int, owner: str) -> bool:
    """False when the lease was lost (it expired and another sync took it): this one stops."""
    until = timezone.now() + timedelta(seconds=settings.INBOUND_SYNC_LEASE_SECONDS)
    return bool(Mailbox.objects.filter(pk=mailbox_id, sync_lease_owner=owner).update(sync_lease_until=until))


def cursor_advance(*, mailbox_id: int, history_id: int) -> bool:
    """Moves the cursor to `history_id` only if that is forward: a slower, older sync never moves it back."""
    return bool(
        Mailbox.objects.filter(pk=mailbox_id)
        .filter(Q(last_history_id__lt=history_id) | Q(last_history_id__isnull=True))
        .update(last_history_id=history_id)
    )  # fmt: skip


def _sync_pass(mailbox: Mailbox, provider: MailProvider, *, source: str, owner: str) -> bool:
    """One pass from the cursor to the end of the history; True when it stored or skipped anything (progress)."""
    message_source = InboundEmail.Source.WEBHOOK if source == "webhook" else InboundEmail.Source.BACKFILL
    if mailbox.last_history_id is None:
        return _resync(mailbox, provider, reason=None, owner=owner)
    start = cursor = mailbox.last_history_id
    progressed = False
    page_token: str | None = None
    while True:
        try:  # the same start id for every page of one listing (a page token belongs to it)
            page = provider.history_since(mailbox.address, start, page_token=page_token)
        except HistoryExpired:
            return _resync(mailbox, provider, reason=f"history from {start} expired", owner=owner)
        _provider_seen(mailbox.pk, page.current_history_id)
        entries = sorted((entry for entry in page.entries if entry.history_id > cursor), key=lambda e: e.history_id)
        for first in range(0, len(entries), FETCH_BATCH):
            batch = entries[first : first + FETCH_BATCH]
            if not lease_renew(mailbox.pk, owner):
                logger.warning("sync of %s lost its lease; another sync goes on", mailbox.address)
                return progressed
            # One round trip for the batch's messages; ProviderError: the task retries, nothing is skipped.
            messages = provider.fetch_messages(mailbox.address, [i for entry in batch for i in entry.email_ids])
            if _batch_store(mailbox, messages, batch, source=message_source):
                cursor, progressed = batch[-1].history_id, True
                continue
            stored = cursor
            try:
                for entry in batch:
                    _entry_store(mailbox, messages, entry, source=message_source)
                    stored = entry.history_id
            finally:  # as far as it got: a failing entry is tried again from here
                if stored > cursor:
                    cursor_advance(mailbox_id=mailbox.pk, history_id=stored)
                    cursor, progressed = stored, True
        page_token = page.next_page_token
        if not page_token:
            return progressed


def _batch_store(mailbox: Mailbox, messages: FetchedMessages, batch: list[HistoryEntry], *, source: str) -> bool:
    """The batch's messages stored in one statement and the cursor moved past the batch, in one transaction, then
    classified in this process (after the commit, so the mailbox row's lock is not held meanwhile). False
    when a message could not be fetched or stored (nothing of the batch is kept): the caller then goes entry by
    entry, counting the failing entry's attempts (poison)."""
    found = [messages.get(email_id) for entry in batch for email_id in entry.email_ids]
    if any(isinstance(message, Exception) for message in found):
        return False
    try:
        with transaction.atomic():
            stored = emails_store_to_classify(
                mailbox=mailbox, messages=[message for message in found if message is not None], source=source
            )
            last = batch[-1].history_id
            cursor_advance(mailbox_id=mailbox.pk, history_id=last)
            Mailbox.objects.filter(pk=mailbox.pk, poison_history_id__lte=last).update(
                poison_history_id=None, poison_attempts=0
            )
    except Exception as error:  # noqa: BLE001 - any message's failure: entry by entry finds which one
        logger.info("mailbox %s: batch store failed (%s: %s); storing entry by entry", mailbox.address,
                    type(error).__name__, error)  # fmt: skip
        return False
    emails_classify_stored(items=stored, queue=QUEUE_FOR_SOURCE[source])  # committed: classified here and now
    return True


def _entry_store(mailbox: Mailbox, messages: FetchedMessages, entry: HistoryEntry, *, source: str) -> None:
    """Stores every message of one history entry (fetched in `messages`; an id not there was deleted). A failure
    counts against the entry across runs; at INBOUND_POISON_ATTEMPTS the entry is skipped with a warning (the
    caller then moves the cursor past it)."""
    try:
        for email_id in entry.email_ids:
            message = messages.get(email_id)
            if isinstance(message, Exception):
                raise message
            if message is not None:
                email_store(mailbox=mailbox, message=message, source=source)
    except Exception as error:
        attempts = poison_count(mailbox.pk, entry.history_id)
        if attempts < settings.INBOUND_POISON_ATTEMPTS:
            raise
        text = (
            f"History entry {entry.history_id} skipped after {attempts} failures "
            f"({type(error).__name__}: {error}); its messages {', '.join(entry.email_ids)} were not stored."
        )
        logger.warning("mailbox %s: %s", mailbox.address, text)
        mailbox_warn(mailbox.pk, text)
        from processing.metrics import inbound_count

        inbound_count("poison_skipped")
    else:
        Mailbox.objects.filter(pk=mailbox.pk, poison_history_id=entry.history_id).update(
            poison_history_id=None, poison_attempts=0
        )


def poison_count(mailbox_id: int, history_id: int) -> int:
    """One more failure of this entry (a different entry starts counting at 1); the count now."""
    with transaction.atomic():
        mailbox = Mailbox.objects.select_for_update().get(pk=mailbox_id)
        attempts = mailbox.poison_attempts + 1 if mailbox.poison_history_id == history_id else 1
        Mailbox.objects.filter(pk=mailbox_id).update(poison_history_id=history_id, poison_attempts=attempts)
    return attempts


def _resync(mailbox: Mailbox, provider: MailProvider, *, reason: str | None, owner: str) -> bool:
    """A full sync (never synced) or a bounded resync (the history expired): the provider's current id first,
    then the newest INBOUND_RESYNC_LIMIT messages, each stored once (the unique key dedupes), then the cursor to
    that id. Whatever arrives meanwhile has a higher id, so the next pass lists it."""
    current = provider.current_history_id(mailbox.address)
    refs = provider.recent_messages(mailbox.address, limit=settings.INBOUND_RESYNC_LIMIT)
    for first in range(0, len(refs), FETCH_BATCH):
        if not lease_renew(mailbox.pk, owner):
            return True
        messages = provider.fetch_messages(mailbox.address, [ref.email_id for ref in refs[first : first + FETCH_BATCH]])
        for message in messages.values():  # a message deleted meanwhile is not there
            if isinstance(message, Exception):
                raise message  # the task retries; a resync has no entry to count it against
            email_store(mailbox=mailbox, message=message, source=InboundEmail.Source.BACKFILL)
    cursor_advance(mailbox_id=mailbox.pk, history_id=current)
    _provider_seen(mailbox.pk, current)
    if reason is not None:
        from processing.metrics import inbound_count

        text = f"Resynced: {reason}; stored the newest {len(refs)} messages and continued from {current}."
        logger.warning("mailbox %s: %s", mailbox.address, text)
        mailbox_warn(mailbox.pk, text)
        inbound_count("resync")
    return True


def _provider_seen(mailbox_id: int, history_id: int) -> None:
    """The provider's current id and the sync time: sync lag = provider id − cursor."""
    Mailbox.objects.filter(pk=mailbox_id).update(
        provider_history_id=Greatest(F("provider_history_id"), history_id), last_synced_at=timezone.now()
    )


def mailbox_warn(mailbox_id: int, text: str) -> None:
    Mailbox.objects.filter(pk=mailbox_id).update(last_warning=text, last_warning_at=timezone.now())
