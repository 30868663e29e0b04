"""Sender mailboxes over IMAP: the poll that reads a folder by UID range into the inbound pipeline (`email_store`,
stored once and classified, as #9's messages are), its settings rules, and the connection test.

The rules:
- `imap_poll(mailbox_id)` runs under the mailbox's lease (Mailbox.sync_lease_*, as services/sync.py does, so one
  poll per mailbox at a time across hosts), fetches `UID <last_uid+1>:*` with BODY.PEEK[] and INTERNALDATE in
  batches of IMAP_BATCH_SIZE, stores each message (email_id "<uidvalidity>:<uid>", history_id the UID) and
  advances `last_uid` in the same transaction: a poll killed at any point leaves a cursor every message up to
  which is stored, and the next poll goes on from there.
- A changed UIDVALIDITY (or folder) voids every UID we kept: the cursor restarts at 0 in the new UIDVALIDITY and
  each message up to the folder's highest UID at that moment is first looked up among the mailbox's stored
  messages by Message-ID (by its raw bytes when it has none); one found is not stored again.
- Connection, login, TLS and protocol errors are recorded on the mailbox (`last_warning`) and returned in the
  PollResult: nothing is raised, so one broken account never stops the others (each mailbox is its own task).
- IDLE (manage.py imap_idle) only asks for a poll; the poll is the one source of truth.
"""

import logging
import os
import socket
import ssl
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from campaigns.validators import host_normalized
from emailsys.celery import app as celery_app
from processing.models import ImapAccount, InboundEmail, Mailbox
from processing.parsing import email_parse
from processing.providers import ProviderMessage
from processing.services.ingest import email_store
from processing.services.sync import lease_renew, lease_take, mailbox_warn, poison_count
from processing.validators import imap_plaintext_auth_allowed, imap_plaintext_refusal

logger = logging.getLogger(__name__)

# What a poll that could not reach or read the server says on the mailbox; a later successful poll clears it.
CONNECTION_WARNING = "IMAP connection failed"
# The fields that decide where the password is sent, or as whom (#7: changing one clears it).
PASSWORD_DESTINATION: tuple[str, ...] = ("host", "port", "security", "username")
NOT_STORED_TEXT = "no IMAP password stored (it is cleared when the host, port, security or username changes)"
# Errors of the server or the way to it (not of one message): recorded, the poll ends, the next one retries.
CONNECTION_ERRORS = (OSError, IMAPClientError, ssl.SSLError)
# Rounds one poll goes at most when polls asked for meanwhile keep coming (the rest is beat's).
MAX_POLL_ROUNDS = 5


class ImapRefused(Exception):
    """Our rules forbid logging in with these settings (no password, or plaintext to a remote host)."""


@dataclass(frozen=True)
class PollResult:
    """What one poll did. `outcome`: "polled", "busy" (another poll holds the lease), "disabled", "failed"."""

    mailbox_id: int
    outcome: str
    stored: int = 0
    duplicates: int = 0  # already stored: the same UID, or in a resync the same Message-ID (or raw bytes)
    skipped: int = 0  # messages that kept failing (INBOUND_POISON_ATTEMPTS) and were passed over, with a warning
    resynced: bool = False
    uidvalidity: int | None = None
    last_uid: int = 0
    error: str = ""


# --- the rules on settings ---------------------------------------------------------------------------------------


def imap_login_refusal(account: ImapAccount) -> str | None:
    """Why the poll must not log in (checked before each connection, for rows written around the forms), or None."""
    if not account.password:
        return NOT_STORED_TEXT
    if account.security == ImapAccount.Security.NONE and not imap_plaintext_auth_allowed(account.host):
        return imap_plaintext_refusal(account.host)
    return None


def imap_settings_bind(*, account: ImapAccount, changes: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`changes` (field → new value) to stored settings, with the stored password set to "" when they move it to
    another host, port, security or username without entering it again (#7, as `account_secrets_bind` does for
    SMTP); and the destination fields that changed when it was cleared. New settings keep what they are given."""
    if account.pk is None or "password" in changes or not account.password:
        return dict(changes), []

    def same(name: str, old: Any, new: Any) -> bool:
        return host_normalized(str(old or "")) == host_normalized(str(new or "")) if name == "host" else old == new

    moved = [name for name in PASSWORD_DESTINATION if name in changes and not same(name, getattr(account, name),
                                                                                    changes[name])]  # fmt: skip
    if not moved:
        return dict(changes), []
    return {**changes, "password": ""}, moved


def imap_password_cleared_message(moved: Sequence[str]) -> str:
    return (
        f"IMAP password cleared because {', '.join(moved)} changed. A password is only sent where it was entered "
        "for: enter it again to use it there."
    )


# --- the mailbox row -----------------------------------------------------------------------------------------------


def imap_mailbox_ensure(*, account: ImapAccount) -> Mailbox:
    """The processing Mailbox of the settings (provider "imap", address the sender account's email), created or
    matched to them; its `enabled` follows the settings'. Call before saving new settings."""
    address = account.sender_account.email.strip().lower()
    mailbox = Mailbox.objects.filter(address=address).first()
    if mailbox is None:
        mailbox = Mailbox.objects.create(address=address, provider=Mailbox.Provider.IMAP, enabled=account.enabled)
    elif mailbox.provider != Mailbox.Provider.IMAP:
        raise ValueError(f"{address} is already a {mailbox.get_provider_display()} mailbox; it cannot also be IMAP")
    elif mailbox.enabled != account.enabled:
        Mailbox.objects.filter(pk=mailbox.pk).update(enabled=account.enabled)
        mailbox.enabled = account.enabled
    account.mailbox = mailbox
    return mailbox


def imap_account_create(
    *,
    sender_account,
    host: str,
    port: int,
    security: str,
    username: str,
    password: str,
    folder: str = "INBOX",
    enabled: bool = True,
) -> ImapAccount:
    """New IMAP settings for a sender account, validated as the admin validates them (ValidationError), with
    their Mailbox. The first poll reads the whole folder."""
    account = ImapAccount(
        sender_account=sender_account, host=host, port=port, security=security, username=username,
        password=password, folder=folder, enabled=enabled,
    )  # fmt: skip
    account.full_clean(exclude=["mailbox"])
    with transaction.atomic():
        imap_mailbox_ensure(account=account)
        account.save()
    return account


# --- connecting ----------------------------------------------------------------------------------------------------


def imap_connect(account: ImapAccount) -> IMAPClient:
    """A logged-in client, every socket operation bounded by IMAP_TIMEOUT_SECONDS. Raises ImapRefused before
    connecting when the rules forbid the login, and CONNECTION_ERRORS when the server does."""
    refusal = imap_login_refusal(account)
    if refusal:
        raise ImapRefused(refusal)
    context = ssl.create_default_context()
    client = IMAPClient(
        account.host,
        port=account.port,
        ssl=account.security == ImapAccount.Security.TLS,
        ssl_context=context,
        timeout=settings.IMAP_TIMEOUT_SECONDS,
    )
    client.normalise_times = False  # INTERNALDATE with its zone, not converted to naive local time
    try:
        if account.security == ImapAccount.Security.STARTTLS:
            client.starttls(context)
        client.login(account.username, account.password)
    except BaseException:
        _logout(client)
        raise
    return client


def imap_connection_test(*, account: ImapAccount) -> tuple[bool, str]:
    """Logs in and selects the folder (read-only); (ok, what an operator is told)."""
    try:
        client = imap_connect(account)
        try:
            info = client.select_folder(account.folder, readonly=True)
            idle = "yes" if client.has_capability("IDLE") else "no"
        finally:
            _logout(client)
    except (*CONNECTION_ERRORS, ImapRefused) as error:
        return False, _error_text(error)
    return True, (
        f"logged in as {account.username}; {account.folder}: {info.get(b'EXISTS', 0)} messages, "
        f"UIDVALIDITY {info.get(b'UIDVALIDITY')}, IDLE {idle}"
    )


# --- polling -------------------------------------------------------------------------------------------------------


def imap_poll_request(*, mailbox_id: int) -> None:
    """Enqueues a poll of the mailbox (queue inbound_backfill). Polls asked for meanwhile coalesce: a poll that
    finds the lease held returns at once, and the holder reads up to the folder's end."""
    celery_app.send_task("processing.imap_poll", kwargs={"mailbox_id": mailbox_id}, queue="inbound_backfill")


def imap_poll_all_request() -> int:
    """Asks for a poll of every enabled IMAP mailbox (beat, every IMAP_POLL_INTERVAL s); returns how many."""
    mailbox_ids = list(
        ImapAccount.objects.filter(enabled=True, mailbox__enabled=True).values_list("mailbox_id", flat=True)
    )
    for mailbox_id in mailbox_ids:
        imap_poll_request(mailbox_id=mailbox_id)
    return len(mailbox_ids)


def imap_poll(mailbox_id: int) -> PollResult:
    """Polls one IMAP mailbox under its lease (see the module's rules). Errors are recorded and returned, not
    raised (only a database that is down gets through).

    Polls asked for while one runs coalesce: each poll first counts itself in `Mailbox.wanted_history_id` (for an
    IMAP mailbox, a counter of poll requests), then tries the lease; the holder, after letting the lease go, polls
    again when the counter moved meanwhile. So a message IDLE announced during a poll is read by that poll's next
    round, or by the asking poll itself, never left for beat."""
    account = ImapAccount.objects.select_related("mailbox", "sender_account").filter(mailbox_id=mailbox_id).first()
    if account is None or not account.enabled:
        return PollResult(mailbox_id=mailbox_id, outcome="disabled")
    owner = f"imap:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:100]
    Mailbox.objects.filter(pk=mailbox_id).update(wanted_history_id=F("wanted_history_id") + 1)
    total: PollResult | None = None
    for _ in range(MAX_POLL_ROUNDS):
        mailbox = lease_take(mailbox_id, owner)
        if mailbox is None:  # another poll holds it, and will go round once more for this request
            return total or PollResult(mailbox_id=mailbox_id, outcome="busy")
        asked = mailbox.wanted_history_id
        account.refresh_from_db()
        account.mailbox = mailbox
        result = _poll_round(account, owner)
        total = result if total is None else _merged(total, result)
        wanted = Mailbox.objects.filter(pk=mailbox_id).values_list("wanted_history_id", flat=True).first()
        if result.outcome != "polled" or wanted == asked:
            break
    return total


def _poll_round(account: ImapAccount, owner: str) -> PollResult:
    """One connection: the folder from the cursor to its end. Gives the lease back."""
    mailbox_id = account.mailbox_id
    try:
        client = imap_connect(account)
        try:
            result = _folder_poll(account, client, owner=owner)
        finally:
            _logout(client)
    except (*CONNECTION_ERRORS, ImapRefused) as error:
        text = f"{CONNECTION_WARNING} ({account}): {_error_text(error)}"
        logger.warning("mailbox %s: %s", account.mailbox.address, text)
        mailbox_warn(mailbox_id, text)
        _count("failed")
        return PollResult(mailbox_id=mailbox_id, outcome="failed", error=text)
    except Exception as error:  # noqa: BLE001 - a surprise (a server's odd answer, a database hiccup): recorded too
        text = f"IMAP poll of {account} failed unexpectedly: {_error_text(error)}"
        logger.exception("mailbox %s: %s", account.mailbox.address, text)
        mailbox_warn(mailbox_id, text)
        _count("failed")
        return PollResult(mailbox_id=mailbox_id, outcome="failed", error=text)
    finally:
        Mailbox.objects.filter(pk=mailbox_id, sync_lease_owner=owner).update(sync_lease_owner="", sync_lease_until=None)
    now = timezone.now()
    ImapAccount.objects.filter(pk=account.pk).update(last_polled_at=now)
    Mailbox.objects.filter(pk=mailbox_id).update(last_synced_at=now)
    Mailbox.objects.filter(pk=mailbox_id, last_warning__startswith=CONNECTION_WARNING).update(
        last_warning="", last_warning_at=None
    )
    return result


def _merged(first: PollResult, then: PollResult) -> PollResult:
    return replace(
        then, stored=first.stored + then.stored, duplicates=first.duplicates + then.duplicates,
        skipped=first.skipped + then.skipped, resynced=first.resynced or then.resynced,
    )  # fmt: skip


def _folder_poll(account: ImapAccount, client: IMAPClient, *, owner: str) -> PollResult:
    info = client.select_folder(account.folder, readonly=True)
    uidvalidity = int(info[b"UIDVALIDITY"])
    has_idle = client.has_capability("IDLE")
    if account.has_idle != has_idle:
        ImapAccount.objects.filter(pk=account.pk).update(has_idle=has_idle)
    resynced = False
    if account.uidvalidity != uidvalidity or account.state_folder != account.folder:
        resynced = _cursor_restart(account, client, uidvalidity)
    last_uid = account.last_uid
    uids = sorted(uid for uid in client.search(["UID", f"{last_uid + 1}:*"]) if uid > last_uid)
    stored = duplicates = skipped = 0
    error = ""
    for batch in _batches(uids, settings.IMAP_BATCH_SIZE):
        if not lease_renew(account.mailbox_id, owner):
            logger.warning("poll of %s lost its lease; another poll goes on", account.mailbox.address)
            break
        fetched = client.fetch(batch, [b"BODY.PEEK[]", b"INTERNALDATE"])
        for uid in batch:
            data = fetched.get(uid)
            try:
                outcome = _message_store(account, uidvalidity, uid, data)
            except Exception as failure:  # noqa: BLE001 - one message's failure is counted, never the others'
                outcome, error = _message_failed(account, uid, failure)
            if outcome == "failed":
                return _result(account, uidvalidity, "failed", stored, duplicates, skipped, resynced, error)
            stored += outcome == "stored"
            duplicates += outcome == "duplicate"
            skipped += outcome == "skipped"
    return _result(account, uidvalidity, "polled", stored, duplicates, skipped, resynced, error)


def _cursor_restart(account: ImapAccount, client: IMAPClient, uidvalidity: int) -> bool:
    """A new UIDVALIDITY (or another folder, or the first poll): the cursor restarts at 0, and every message up to
    the folder's highest UID now is deduplicated against what was stored. True when it is a resync (a warning)."""
    highest = max(client.search(["ALL"]), default=0)
    previous = (account.state_folder, account.uidvalidity)
    ImapAccount.objects.filter(pk=account.pk, state_folder=previous[0], uidvalidity=previous[1]).update(
        state_folder=account.folder, uidvalidity=uidvalidity, last_uid=0, resync_until_uid=highest
    )
    account.state_folder, account.uidvalidity, account.last_uid, account.resync_until_uid = (
        account.folder, uidvalidity, 0, highest
    )  # fmt: skip
    if previous[1] is None:
        return False
    text = (
        f"UIDVALIDITY of {account.folder} changed from {previous[1]} to {uidvalidity} (folder {previous[0]!r} before):"
        f" resyncing its {highest} UIDs, each message stored once by Message-ID."
    )
    logger.warning("mailbox %s: %s", account.mailbox.address, text)
    mailbox_warn(account.mailbox_id, text)
    _count("resync")
    return True


def _message_store(account: ImapAccount, uidvalidity: int, uid: int, data: dict | None) -> str:
    """Stores one fetched message and moves the cursor past it, in one transaction: "stored", "duplicate", or
    "gone" (expunged before the fetch: nothing to store)."""
    with transaction.atomic():
        outcome = "gone"
        if data is not None and b"BODY[]" in data:
            raw = bytes(data[b"BODY[]"])
            if uid <= account.resync_until_uid and _stored_before(account, uidvalidity, raw):
                outcome = "duplicate"
            else:
                message = ProviderMessage(
                    email_id=f"{uidvalidity}:{uid}", history_id=uid, raw=raw,
                    internal_date=_aware(data.get(b"INTERNALDATE")),
                )  # fmt: skip
                row = email_store(mailbox=account.mailbox, message=message, source=InboundEmail.Source.BACKFILL)
                outcome = "stored" if row is not None else "duplicate"
        _cursor_advance(account, uidvalidity, uid)
    Mailbox.objects.filter(pk=account.mailbox_id, poison_history_id=uid).update(
        poison_history_id=None, poison_attempts=0
    )
    return outcome


def _message_failed(account: ImapAccount, uid: int, failure: Exception) -> tuple[str, str]:
    """A message that could not be stored: the poll stops before it (the cursor stays, the next poll tries it
    again) until it failed INBOUND_POISON_ATTEMPTS times; then it is passed over with a warning."""
    attempts = poison_count(account.mailbox_id, uid)
    described = f"{type(failure).__name__}: {failure}"
    if attempts < settings.INBOUND_POISON_ATTEMPTS:
        text = f"UID {uid} of {account.folder} failed ({described}), attempt {attempts}; the next poll tries it again."
        logger.warning("mailbox %s: %s", account.mailbox.address, text, exc_info=failure)
        mailbox_warn(account.mailbox_id, text)
        return "failed", text
    text = f"UID {uid} of {account.folder} skipped after {attempts} failures ({described}); it was not stored."
    logger.warning("mailbox %s: %s", account.mailbox.address, text)
    mailbox_warn(account.mailbox_id, text)
    _cursor_advance(account, account.uidvalidity or 0, uid)
    _count("poison_skipped")
    return "skipped", text


def _stored_before(account: ImapAccount, uidvalidity: int, raw: bytes) -> bool:
    """Whether the mailbox stored this message under another UIDVALIDITY: the same Message-ID, or for a message
    without one the same bytes. Rows of this UIDVALIDITY are the unique key's business (a second copy of one
    Message-ID in the folder is a message of its own)."""
    message_id = email_parse(raw).message_id
    rows = InboundEmail.objects.filter(mailbox_id=account.mailbox_id).exclude(email_id__startswith=f"{uidvalidity}:")
    if message_id:
        return rows.filter(message_id=message_id[:998]).exists()
    return rows.filter(message_id="", size_bytes=len(raw), raw=raw).exists()


def _cursor_advance(account: ImapAccount, uidvalidity: int, uid: int) -> None:
    """Forward only, and only within the UIDVALIDITY the message was read in."""
    ImapAccount.objects.filter(pk=account.pk, uidvalidity=uidvalidity, last_uid__lt=uid).update(last_uid=uid)
    account.last_uid = max(account.last_uid, uid)


def _result(account: ImapAccount, uidvalidity: int, outcome: str, stored: int, duplicates: int, skipped: int,
            resynced: bool, error: str) -> PollResult:  # fmt: skip
    last_uid = ImapAccount.objects.filter(pk=account.pk).values_list("last_uid", flat=True).first() or 0
    return PollResult(
        mailbox_id=account.mailbox_id, outcome=outcome, stored=stored, duplicates=duplicates, skipped=skipped,
        resynced=resynced, uidvalidity=uidvalidity, last_uid=last_uid, error=error,
    )  # fmt: skip


def _batches(uids: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(uids), max(size, 1)):
        yield uids[start : start + size]


def _aware(value: Any) -> datetime:
    """INTERNALDATE as an aware datetime (now, when the server sent none)."""
    if not isinstance(value, datetime):
        return timezone.now()
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _error_text(error: BaseException) -> str:
    text = str(error) or repr(error)
    if isinstance(error, bytes):
        text = error.decode(errors="replace")
    return f"{type(error).__name__}: {text}"[:1000]


def _logout(client: IMAPClient) -> None:
    """Logs out, or at least closes the socket; a dead connection raises nothing here."""
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - the connection is being dropped anyway
        try:
            client.shutdown()
        except Exception:  # noqa: BLE001, S110 - nothing more to do with a dead socket
            pass


def _count(outcome: str) -> None:
    """emailsys_inbound_emails{event="imap_failed" | "imap_resync" | "imap_poison_skipped"} on /metrics."""
    from processing.metrics import inbound_count

    inbound_count(f"imap_{outcome}")
