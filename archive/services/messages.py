"""The archive's message: what a producer puts on the queue (the seed's shape), validated once at the edge, and
the document and key it becomes. The key comes only from the message's own data, so a redelivered message lands
on the same key and a conditional put refuses the second copy."""

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any

# The seed's metadata.processor_version: bump when the document's shape changes.
PROCESSOR_VERSION = "1.0.0"
DEFAULT_SOURCE = "external"
EMAIL_FIELDS = ("email_subject", "email_sender", "email_timestream", "email_content")
_SAFE = re.compile(r"[A-Za-z0-9._-]")
_MAX_EPOCH = datetime(9999, 12, 31, tzinfo=UTC).timestamp()


class InvalidArchiveMessage(ValueError):
    """The message can never be archived (bad JSON, a missing or malformed field): it goes to the dead-letter
    queue, with this as the reason."""


@dataclass(frozen=True)
class ArchiveMessage:
    message_id: str
    email_subject: str
    email_sender: str
    email_timestream: str  # seconds since the epoch, as the producer wrote it (the seed: "1693561101")
    email_content: str
    source: str
    sent_at: datetime  # email_timestream as a UTC datetime: the key's date and time

    @property
    def sender_local_part(self) -> str:
        local = parseaddr(self.email_sender)[1].rpartition("@")[0]
        return local[1:-1] if len(local) > 1 and local[0] == local[-1] == '"' else local  # "quoted"@host

    def key(self) -> str:
        """emails/YYYY/MM/DD/<sender local part>/<message id>_<HHMMSS>.json, every part from the message."""
        local = key_component(self.sender_local_part.lower(), max_length=64)
        name = key_component(self.message_id.strip().strip("<>"), max_length=150)
        return f"emails/{self.sent_at:%Y/%m/%d}/{local}/{name}_{self.sent_at:%H%M%S}.json"

    def document(self, *, processed_at: datetime) -> dict[str, Any]:
        """The seed's JSON document."""
        return {
            "message_id": self.message_id,
            "processed_at": processed_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "email_data": {
                "email_subject": self.email_subject,
                "email_sender": self.email_sender,
                "email_timestream": self.email_timestream,
                "email_content": self.email_content,
            },
            "metadata": {"processor_version": PROCESSOR_VERSION, "source": self.source},
        }

    def document_bytes(self, *, processed_at: datetime) -> bytes:
        return json.dumps(self.document(processed_at=processed_at), ensure_ascii=False, indent=2).encode()


def key_component(value: str, *, max_length: int) -> str:
    """One path segment from user data: [A-Za-z0-9._-] kept, every other character percent-encoded (UTF-8), so
    no "/" or ".." survives and distinct values stay distinct. A leading "." is encoded too ("." and ".." are
    never a segment). Longer than `max_length`: cut, with a hash of the whole value so it stays unique."""
    encoded = "".join(char if _SAFE.fullmatch(char) else _percent(char) for char in value)
    if encoded.startswith("."):
        encoded = "%2E" + encoded[1:]
    if len(encoded) > max_length:
        digest = hashlib.sha256(value.encode()).hexdigest()[:16]
        head = encoded[: max_length - 17]
        partial = head.rfind("%", len(head) - 2)  # never cut a %XX in two
        encoded = f"{head[:partial] if partial != -1 else head}-{digest}"
    return encoded


def _percent(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))


def archive_message_parse(body: str, *, fallback_message_id: str) -> ArchiveMessage:
    """The message from an SQS body. Accepted: the seed document (message_id, email_data{…}, metadata{source}), or
    just the four email_* fields at the top level (the seed's test producer). Without a message_id the SQS message
    id is used (stable across redeliveries of that SQS message). Raises InvalidArchiveMessage."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError) as error:
        raise InvalidArchiveMessage(f"body is not JSON: {error}") from error
    if not isinstance(data, dict):
        raise InvalidArchiveMessage("body is not a JSON object")
    email_data = data.get("email_data", data)
    if not isinstance(email_data, dict):
        raise InvalidArchiveMessage("email_data is not an object")
    missing = [name for name in EMAIL_FIELDS if name not in email_data]
    if missing:
        raise InvalidArchiveMessage(f"missing field(s): {', '.join(missing)}")
    for name in ("email_subject", "email_sender", "email_content"):
        if not isinstance(email_data[name], str):
            raise InvalidArchiveMessage(f"{name} is not a string")
    sender = email_data["email_sender"]
    address = parseaddr(sender)[1]
    if "@" not in address or not address.rpartition("@")[0] or "\x00" in sender:
        raise InvalidArchiveMessage(f"email_sender {sender[:100]!r} has no address with a local part")
    timestream, sent_at = _timestamp(email_data["email_timestream"])
    message_id = data.get("message_id", "") if "email_data" in data else ""
    if not isinstance(message_id, str):
        raise InvalidArchiveMessage("message_id is not a string")
    message_id = message_id.strip() or fallback_message_id
    if not message_id.strip("<> "):
        raise InvalidArchiveMessage("no message id")
    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    source = metadata.get("source") if isinstance(metadata.get("source"), str) and metadata["source"] else None
    return ArchiveMessage(
        message_id=message_id,
        email_subject=email_data["email_subject"],
        email_sender=sender,
        email_timestream=timestream,
        email_content=email_data["email_content"],
        source=source or DEFAULT_SOURCE,
        sent_at=sent_at,
    )


def _timestamp(value: object) -> tuple[str, datetime]:
    """(as written, as UTC datetime) for seconds since the epoch given as a number or a numeric string."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidArchiveMessage(f"email_timestream {value!r} is not seconds since the epoch")
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError as error:
        raise InvalidArchiveMessage(f"email_timestream {text[:40]!r} is not seconds since the epoch") from error
    if not 0 <= seconds < _MAX_EPOCH:  # NaN fails this too
        raise InvalidArchiveMessage(f"email_timestream {text[:40]!r} is out of range")
    return text, datetime.fromtimestamp(int(seconds), tz=UTC)


def archive_message_body(message: ArchiveMessage) -> str:
    """The queue body a producer of ours sends: the seed's document without processed_at (set when archived)."""
    document = message.document(processed_at=message.sent_at)
    del document["processed_at"]
    return json.dumps(document, ensure_ascii=False)
