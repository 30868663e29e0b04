"""The simulator's behaviour, as plain functions the views call: accept a message (building its RFC 5322 bytes or
taking them raw), number it in the mailbox's history under a row lock, keep the retention, answer history and
message reads the way Gmail does, and manage subscriptions and faults. Input errors raise `SimulatorInputError`
(the views answer 400), unknown things `SimulatorNotFound` (404)."""

import random
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import connection, transaction
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from emailsys.db import execute_prepared, fetch_prepared
from simulator.dispatcher import Notification, notification_enqueue
from simulator.models import SimFaults, SimHistoryEntry, SimMailbox, SimMessage

MAX_RECIPIENTS = 100
MAX_ADDRESS_LENGTH = SimMailbox._meta.get_field("address").max_length or 254
MAX_PAGE = 500
MAX_MESSAGES_LIST = 10000
WATCH_DAYS = 7  # Gmail's watch expires after a week
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # RFC 5322 field name: printable ASCII except ":"


class SimulatorInputError(Exception):
    """Bad input: the view answers 400 with this message."""


class SimulatorNotFound(Exception):
    """Unknown mailbox or message, or history older than the retention: 404 with this message."""


@dataclass(frozen=True)
class Delivered:
    mailbox: str
    email_id: str
    history_id: int


def address_normalize(value: object, *, field: str) -> str:
    """The bare, lower-case address of "a@b" or "Name <a@b>"; SimulatorInputError when it is not one."""
    if not isinstance(value, str) or not value.strip():
        raise SimulatorInputError(f'"{field}" must be a non-empty string (an email address)')
    if "\n" in value or "\r" in value:
        raise SimulatorInputError(f'"{field}" must not contain line breaks')
    _, address = parseaddr(value)
    try:
        if len(address) > MAX_ADDRESS_LENGTH:
            raise ValidationError("too long")
        validate_email(address)
    except ValidationError:
        raise SimulatorInputError(f'"{field}" is not a valid email address: {value[:200]!r}') from None
    return address.lower()


def _text(payload: dict, name: str, *, required: bool) -> str:
    value = payload.get(name)
    if value is None:
        if required:
            raise SimulatorInputError(f'"{name}" is required')
        return ""
    if not isinstance(value, str):
        raise SimulatorInputError(f'"{name}" must be a string')
    return value


def _raw_bytes(payload: dict) -> bytes | None:
    """ "raw" (text; lone surrogates \\udc80-\\udcff stand for the bytes 0x80-0xff, as Python's surrogateescape)
    or "raw_base64" (any bytes): kept exactly as given, even when it is not a valid message."""
    import base64
    import binascii

    if payload.get("raw_base64") is not None:
        value = payload["raw_base64"]
        if not isinstance(value, str):
            raise SimulatorInputError('"raw_base64" must be a string (base64 or base64url)')
        try:
            padded = value.strip() + "=" * (-len(value.strip()) % 4)
            return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raise SimulatorInputError('"raw_base64" is not valid base64') from None
    if payload.get("raw") is not None:
        value = payload["raw"]
        if not isinstance(value, str):
            raise SimulatorInputError('"raw" must be a string (the RFC 5322 message)')
        try:
            return value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise SimulatorInputError('"raw" contains characters that are not text (use "raw_base64")') from None
    return None


def message_build(*, sender: str, recipients: list[str], subject: str, body: str, html: str, headers: dict) -> bytes:
    """RFC 5322 bytes (CRLF) from the JSON fields, with Date and Message-ID unless `headers` gives them."""
    message = EmailMessage(policy=policy.SMTP)
    try:
        message["From"] = sender
        message["To"] = ", ".join(recipients)
        message["Subject"] = subject
        message["Date"] = format_datetime(timezone.now())
        message["Message-ID"] = make_msgid(domain="simulator.invalid")
        for name, value in headers.items():
            del message[name]
            message[name] = value
        message.set_content(body)
        if html:
            message.add_alternative(html, subtype="html")
        return message.as_bytes()
    except (ValueError, TypeError, IndexError) as error:
        raise SimulatorInputError(f"cannot build the message: {error}") from None


def _headers(payload: dict) -> dict[str, str]:
    headers = payload.get("headers")
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise SimulatorInputError('"headers" must be an object of header name to string value')
    for name, value in headers.items():
        if not HEADER_NAME.match(name):
            raise SimulatorInputError(f"header name {name[:80]!r} is not a valid RFC 5322 field name")
        if not isinstance(value, str):
            raise SimulatorInputError(f'header "{name}" must have a string value')
        if "\r" in value or "\n" in value:
            raise SimulatorInputError(f'header "{name}" must not contain line breaks')
    return headers


def _recipients(payload: dict) -> list[str]:
    value = payload.get("to")
    if value is None:
        raise SimulatorInputError('"to" is required (an address or a list of addresses)')
    values = value if isinstance(value, list) else [value]
    if not values:
        raise SimulatorInputError('"to" must not be an empty list')
    if len(values) > MAX_RECIPIENTS:
        raise SimulatorInputError(f'"to" has more than {MAX_RECIPIENTS} addresses')
    return [address_normalize(item, field="to") for item in values]


def email_send(*, payload: object, base_url: str = "") -> list[Delivered]:
    """Stores one message per distinct recipient mailbox (creating mailboxes as needed), each numbered in its
    mailbox's history, and notifies the subscribers after commit. `base_url` is this simulator's URL as the
    caller reached it (an autoconnected Mailbox remembers it when it is not the INBOUND_PROVIDER_URL setting)."""
    if not isinstance(payload, dict):
        raise SimulatorInputError("the body must be a JSON object")
    recipients = list(dict.fromkeys(_recipients(payload)))
    raw = _raw_bytes(payload)
    if raw is None:
        sender = _text(payload, "from", required=True)
        address_normalize(sender, field="from")
        raw = message_build(
            sender=sender,
            recipients=[item for item in _recipient_texts(payload)],
            subject=_text(payload, "subject", required=True),
            body=_text(payload, "body", required=True),
            html=_text(payload, "html", required=False),
            headers=_headers(payload),
        )
    faults = faults_snapshot()
    delivered = {}
    with transaction.atomic():
        for address in sorted(recipients):  # one lock order for every sender: no deadlock between two lists
            delivered[address] = _deliver(address=address, raw=raw, faults=faults, base_url=base_url)
    return [delivered[address] for address in recipients]


def _recipient_texts(payload: dict) -> list[str]:
    value = payload["to"]
    return value if isinstance(value, list) else [value]


def _history_id_allocate(address: str, *, step: int) -> SimMailbox | None:
    """Raises the mailbox's id by `step` in one UPDATE … RETURNING, which holds the row lock until commit (so ids are
    handed out in commit order across processes); None when the mailbox does not exist."""
    rows = fetch_prepared(
        "UPDATE simulator_simmailbox SET last_history_id = last_history_id + %s WHERE address = %s "
        "RETURNING id, last_history_id, history_floor, watch_url, watch_secret",
        [step, address],
    )
    if not rows:
        return None
    pk, last, floor, url, secret = rows[0]
    return SimMailbox(
        pk=pk, address=address, last_history_id=last, history_floor=floor, watch_url=url, watch_secret=secret
    )


def _deliver(*, address: str, raw: bytes, faults: dict, base_url: str) -> Delivered:
    # Gmail's ids rise with gaps (other changes happen in between): a small random step.
    step = random.randint(1, 3)
    mailbox = _history_id_allocate(address, step=step)
    if mailbox is None:
        _, created = SimMailbox.objects.get_or_create(address=address)
        if created and settings.INBOUND_SIMULATOR_AUTOCONNECT:
            _autoconnect(address=address, base_url=base_url)
        mailbox = _history_id_allocate(address, step=step)
        assert mailbox is not None  # created above, in this transaction
    message = SimMessage(mailbox=mailbox, email_id=uuid.uuid4().hex, history_id=mailbox.last_history_id, raw=raw,
                         internal_date=timezone.now())  # fmt: skip
    _message_store(message)
    if mailbox.last_history_id - mailbox.history_floor > settings.INBOUND_SIMULATOR_RETENTION:
        _retention_apply(mailbox)  # ids rise by at least 1 per entry: below that span, nothing can be over
    if mailbox.watch_url:
        notification = Notification(
            url=mailbox.watch_url,
            secret=mailbox.watch_secret,
            address=address,
            history_id=message.history_id,
            faults=faults,
        )
        transaction.on_commit(lambda: notification_enqueue(notification))
    return Delivered(mailbox=address, email_id=message.email_id, history_id=message.history_id)


def _message_store(message: SimMessage) -> None:
    """The message and its history entry in one prepared statement (through the ORM, the two inserts' compilation
    was most of a send's CPU: the simulator shares the machine with what it stands in front of in bench/inbound)."""
    quote = connection.ops.quote_name
    messages, entries = quote(SimMessage._meta.db_table), quote(SimHistoryEntry._meta.db_table)
    execute_prepared(
        f"WITH message AS (INSERT INTO {messages} (mailbox_id, email_id, history_id, raw, internal_date) "  # noqa: S608 - names from the models
        f"VALUES (%s, %s, %s, %s, %s) RETURNING id) "
        f"INSERT INTO {entries} (mailbox_id, history_id, message_id) SELECT %s, %s, id FROM message",
        [message.mailbox.pk, message.email_id, message.history_id, message.raw, message.internal_date,
         message.mailbox.pk, message.history_id],
    )  # fmt: skip


class _InProcessWatch:
    """The provider handed to mailbox_connect by autoconnect: its watch() writes the subscription row directly, in
    the sending transaction (an HTTP call back into ourselves would deadlock on the mailbox row)."""

    def watch(self, address: str, *, url: str, secret: str) -> int:
        return watch_set(address=address, url=url, secret=secret).last_history_id


def _autoconnect(*, address: str, base_url: str) -> None:
    """Connects our side to the new simulator mailbox, unless the address is one we read otherwise (IMAP)."""
    from processing.services.mailboxes import MailboxProviderMismatch, mailbox_connect

    provider_url = base_url if base_url and base_url != settings.INBOUND_PROVIDER_URL.rstrip("/") else ""
    try:
        with transaction.atomic():
            mailbox_connect(
                address=address,
                provider_url=provider_url,
                webhook_url=settings.INBOUND_WEBHOOK_URL,
                provider=_InProcessWatch(),  # type: ignore[arg-type] - only watch() is called
            )
    except MailboxProviderMismatch:
        return


def _retention_apply(mailbox: SimMailbox) -> None:
    keep = settings.INBOUND_SIMULATOR_RETENTION
    boundary = (
        SimHistoryEntry.objects.filter(mailbox=mailbox)
        .order_by("-history_id")
        .values_list("history_id", flat=True)[keep : keep + 1]
    )
    oldest_dropped = next(iter(boundary), None)
    if oldest_dropped is not None:
        _history_forget(mailbox, below=oldest_dropped + 1)


def _history_forget(mailbox: SimMailbox, *, below: int) -> None:
    SimHistoryEntry.objects.filter(mailbox=mailbox, history_id__lt=below).delete()
    floor = min(below - 1, mailbox.last_history_id)
    if floor > mailbox.history_floor:
        SimMailbox.objects.filter(pk=mailbox.pk, history_floor__lt=floor).update(history_floor=floor)


def mailbox_get(address: str) -> SimMailbox:
    if "\x00" in address:  # PostgreSQL text cannot hold NUL: no such mailbox
        raise SimulatorNotFound("no such mailbox")
    try:
        return SimMailbox.objects.get(address=address.strip().lower())
    except SimMailbox.DoesNotExist:
        raise SimulatorNotFound(f"no mailbox {address[:254]!r}") from None


def mailbox_profile(*, address: str) -> dict:
    mailbox = mailbox_get(address)
    oldest = (
        SimHistoryEntry.objects.filter(mailbox=mailbox).order_by("history_id").values_list("history_id", flat=True)
    ).first()
    return {
        "email_address": mailbox.address,
        "history_id": mailbox.last_history_id,
        "oldest_history_id": oldest if oldest is not None else mailbox.last_history_id,
        "messages_total": mailbox.messages.count(),
    }


def _int_param(value: str | None, *, name: str, default: int | None, low: int, high: int) -> int:
    if value is None or value == "":
        if default is None:
            raise SimulatorInputError(f'"{name}" is required')
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SimulatorInputError(f'"{name}" must be an integer') from None
    if not low <= number <= high:
        raise SimulatorInputError(f'"{name}" must be between {low} and {high}')
    return number


def history_list(*, address: str, start: str | None, max_results: str | None, page_token: str | None) -> dict:
    """Entries with id > start, oldest first, a page at a time. 404 when start is older than the retention."""
    mailbox = mailbox_get(address)
    start_id = _int_param(start, name="start_history_id", default=None, low=0, high=2**63 - 1)
    limit = _int_param(max_results, name="max_results", default=100, low=1, high=MAX_PAGE)
    after = start_id
    if page_token:
        after = max(after, _int_param(page_token, name="page_token", default=None, low=0, high=2**63 - 1))
    if start_id < mailbox.history_floor:
        raise SimulatorNotFound("start_history_id is older than the retention")
    rows = list(
        SimHistoryEntry.objects.filter(mailbox=mailbox, history_id__gt=after)
        .order_by("history_id")
        .values_list("history_id", "message__email_id")[: limit + 1]
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "history": [{"id": hid, "messages_added": [{"id": email_id}]} for hid, email_id in rows],
        "history_id": mailbox.last_history_id,
        "next_page_token": str(rows[-1][0]) if more else None,
    }


def messages_list(*, address: str, max_results: str | None) -> dict:
    mailbox = mailbox_get(address)
    limit = _int_param(max_results, name="max_results", default=100, low=1, high=MAX_MESSAGES_LIST)
    rows = mailbox.messages.order_by("-history_id").values_list("email_id", "history_id")[:limit]
    return {"messages": [{"id": e, "history_id": h} for e, h in rows], "history_id": mailbox.last_history_id}


def message_get(*, address: str, email_id: str) -> SimMessage:
    if "\x00" in address + email_id:
        raise SimulatorNotFound("no such message")
    message = SimMessage.objects.filter(mailbox__address=address.strip().lower(), email_id=email_id).first()
    if message is None:
        raise SimulatorNotFound(f"no message {email_id[:64]!r} in mailbox {address[:254]!r}")
    return message


MAX_BATCH_GET = 100


def messages_batch_get(*, address: str, payload: object) -> tuple[list[SimMessage], list[str]]:
    """Several messages in one call (Gmail's batch requests): (found, ids not found), found in the order asked."""
    if not isinstance(payload, dict) or not isinstance(payload.get("ids"), list):
        raise SimulatorInputError('the body must be {"ids": ["<email_id>", ...]}')
    ids = payload["ids"]
    if not all(isinstance(email_id, str) for email_id in ids):
        raise SimulatorInputError('"ids" must be strings')
    if len(ids) > MAX_BATCH_GET:
        raise SimulatorInputError(f'at most {MAX_BATCH_GET} "ids" per call')
    mailbox = mailbox_get(address)
    found = {message.email_id: message for message in mailbox.messages.filter(email_id__in=ids)}
    return [found[email_id] for email_id in ids if email_id in found], [e for e in ids if e not in found]


def message_delete(*, address: str, email_id: str) -> None:
    """Deletes a message (its history entry stays, as in Gmail): a later fetch answers 404."""
    message_get(address=address, email_id=email_id).delete()


def watch_validate(payload: object) -> tuple[str, str]:
    if not isinstance(payload, dict):
        raise SimulatorInputError('the body must be a JSON object {"url", "secret"}')
    url = _text(payload, "url", required=True)
    secret = _text(payload, "secret", required=True)
    if any(ord(char) < 32 or ord(char) == 127 for char in url) or len(url) > 2000:
        raise SimulatorInputError('"url" must be a URL of at most 2000 characters, without control characters')
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SimulatorInputError('"url" must be an http(s) URL')
    if parts.hostname not in LOOPBACK_HOSTS:
        raise SimulatorInputError('"url" must be on loopback (127.0.0.1, localhost or ::1): this is a dev tool')
    try:
        Webhook(secret)
    except Exception:  # noqa: BLE001 - the package raises several kinds for a bad secret
        raise SimulatorInputError('"secret" must be a Standard Webhooks secret ("whsec_" + base64)') from None
    return url, secret


def watch_set(*, address: str, url: str, secret: str) -> SimMailbox:
    """Subscribes `url` (creating the mailbox if needed); replaces any earlier subscription."""
    address = address_normalize(address, field="address")
    mailbox, _ = SimMailbox.objects.get_or_create(address=address)
    mailbox.watch_url, mailbox.watch_secret = url, secret
    mailbox.watch_expiration = timezone.now() + timedelta(days=WATCH_DAYS)
    mailbox.save(update_fields=["watch_url", "watch_secret", "watch_expiration"])
    return mailbox


def watch_stop(*, address: str) -> None:
    mailbox = mailbox_get(address)
    SimMailbox.objects.filter(pk=mailbox.pk).update(watch_url="", watch_secret="", watch_expiration=None)


def history_expire(*, address: str, payload: object) -> dict:
    """Forgets the history entries below `before` (messages stay fetchable)."""
    if (
        not isinstance(payload, dict)
        or isinstance(payload.get("before"), bool)
        or not isinstance(payload.get("before"), int)
    ):
        raise SimulatorInputError('the body must be {"before": <integer history id>}')
    with transaction.atomic():
        mailbox = SimMailbox.objects.select_for_update().get(pk=mailbox_get(address).pk)
        _history_forget(mailbox, below=max(0, payload["before"]))
    return mailbox_profile(address=address)


FAULT_FIELDS = {"drop", "duplicate", "delay_ms", "reorder", "seed"}


def faults_snapshot() -> dict:
    """The fault settings every send applies (read per send: one prepared query, not an ORM one)."""
    names = ("drop", "duplicate", "delay_min_ms", "delay_max_ms", "reorder", "seed", "version")
    quote = connection.ops.quote_name
    columns, table = ", ".join(quote(name) for name in names), quote(SimFaults._meta.db_table)
    rows = fetch_prepared(f"SELECT {columns} FROM {table} WHERE id = 1", [])  # noqa: S608 - names from the model
    faults = SimFaults(pk=1, **dict(zip(names, rows[0], strict=True))) if rows else SimFaults(pk=1)
    return {
        "drop": faults.drop,
        "duplicate": faults.duplicate,
        "delay_ms": [faults.delay_min_ms, faults.delay_max_ms],
        "reorder": faults.reorder,
        "seed": faults.seed,
        "version": faults.version,
    }


def _fraction(payload: dict, name: str) -> float:
    value = payload.get(name, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise SimulatorInputError(f'"{name}" must be a number between 0 and 1')
    return float(value)


def faults_set(*, payload: object) -> dict:
    """Replaces the faults (fields left out are off)."""
    if not isinstance(payload, dict):
        raise SimulatorInputError("the body must be a JSON object")
    unknown = set(payload) - FAULT_FIELDS
    if unknown:
        known = ", ".join(sorted(FAULT_FIELDS))
        raise SimulatorInputError(f"unknown fields: {', '.join(sorted(unknown))} (known: {known})")
    delay = payload.get("delay_ms", [0, 0])
    if isinstance(delay, int) and not isinstance(delay, bool):
        delay = [delay, delay]
    if (
        not isinstance(delay, list)
        or len(delay) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 600_000 for v in delay)
        or delay[0] > delay[1]
    ):
        raise SimulatorInputError('"delay_ms" must be [min, max] integers, 0 <= min <= max <= 600000')
    reorder = payload.get("reorder", False)
    if not isinstance(reorder, bool):
        raise SimulatorInputError('"reorder" must be true or false')
    seed = payload.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or abs(seed) >= 2**63):
        raise SimulatorInputError('"seed" must be an integer or null')
    with transaction.atomic():
        faults, _ = SimFaults.objects.select_for_update().get_or_create(pk=1)
        faults.drop, faults.duplicate = _fraction(payload, "drop"), _fraction(payload, "duplicate")
        faults.delay_min_ms, faults.delay_max_ms = delay
        faults.reorder, faults.seed = reorder, seed
        faults.version += 1
        faults.save()
    return faults_snapshot()


def faults_reset() -> dict:
    return faults_set(payload={})
