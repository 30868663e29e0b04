"""History sync: notifications raise a mailbox's wanted id; one sync at a time per mailbox reads the provider's
history from the cursor up, stores each message once and advances the cursor forward only.

CONTRACT (owned by the sync helper; `mailbox_notify` and `sync_request` are the core's and keep their signature):
- `mailbox_notify` records a webhook delivery once (by webhook id), raises `wanted_history_id` to the highest id
  announced, and asks for a sync when the cursor is behind it.
- `mailbox_sync(mailbox_id, source)` runs under the mailbox's lease (INBOUND_SYNC_LEASE_SECONDS), loops until the
  cursor reaches the wanted id, stores messages with `email_store`, advances the cursor with a conditional UPDATE
  (`WHERE last_history_id < new`), skips a poison entry after INBOUND_POISON_ATTEMPTS with a warning, resyncs
  (bounded by INBOUND_RESYNC_LIMIT, from `current_history_id()` read first) on HistoryExpired or a None cursor.
"""

from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Greatest

from processing.models import Mailbox, WebhookReceipt


def sync_request(*, mailbox_id: int, source: str) -> None:
    """Enqueues a sync of the mailbox (source "webhook": the fresh queue; "backfill": the backfill queue)."""
    from processing.tasks import sync_mailbox

    queue = "inbound" if source == "webhook" else "inbound_backfill"
    sync_mailbox.apply_async(kwargs={"mailbox_id": mailbox_id, "source": source}, queue=queue)


def mailbox_notify(*, mailbox: Mailbox, history_id: int, webhook_id: str) -> bool:
    """A verified notification. False when this webhook id was seen before (nothing happens); otherwise the
    wanted id rises to `history_id` if higher and a sync is requested when the cursor is behind."""
    try:
        with transaction.atomic():
            WebhookReceipt.objects.create(webhook_id=webhook_id, mailbox=mailbox, history_id=history_id)
    except IntegrityError:
        return False
    Mailbox.objects.filter(pk=mailbox.pk).update(wanted_history_id=Greatest(F("wanted_history_id"), history_id))
    cursor = Mailbox.objects.filter(pk=mailbox.pk).values_list("last_history_id", flat=True).first()
    if cursor is None or cursor < history_id:
        transaction.on_commit(lambda: sync_request(mailbox_id=mailbox.pk, source="webhook"))
    return True


def mailbox_sync(*, mailbox_id: int, source: str) -> None:
    raise NotImplementedError("the sync helper fills this in")
