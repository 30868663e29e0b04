"""Local SMTP capture: what demo sender accounts send lands here as .eml files, the captured mail viewable at
/captured/.

The capture server (`manage.py smtp_capture`, aiosmtpd on 127.0.0.1:1025) accepts everything and
writes one file per message with the envelope prepended as X-Envelope-* headers.
"""

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

MESSAGE_FILE = re.compile(r"^[0-9]{8}T[0-9]{12}-[0-9a-f]{12}\.eml$")


class MailCaptureHandler:
    """aiosmtpd handler: stores every accepted message under `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server, session, envelope) -> str:
        captured_mail_store(
            directory=self.directory,
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            content=envelope.original_content or envelope.content,
        )
        return "250 Message accepted for delivery"


def captured_mail_store(*, directory: Path, mail_from: str, rcpt_tos: list[str], content: bytes) -> Path:
    """Writes atomically (temp file, then rename) so a reader never sees half a message."""
    name = f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:12]}.eml"
    envelope = f"X-Envelope-From: <{mail_from}>\r\nX-Envelope-To: {', '.join(f'<{r}>' for r in rcpt_tos)}\r\n"
    temporary = directory / f".{name}.tmp"
    temporary.write_bytes(envelope.encode() + content)
    final = directory / name
    temporary.rename(final)
    return final


@dataclass(frozen=True)
class CapturedMessage:
    name: str
    received_at: datetime
    mail_from: str
    to: str
    subject: str


def _parse(path: Path, *, headers_only: bool) -> EmailMessage:
    with path.open("rb") as handle:
        return BytesParser(policy=policy.default).parse(handle, headersonly=headers_only)


def captured_mail_list(*, directory: Path, limit: int = 200) -> list[CapturedMessage]:
    """Newest first. File names sort by receive time, so only `limit` files are parsed."""
    if not directory.is_dir():
        return []
    names = sorted((p.name for p in directory.iterdir() if MESSAGE_FILE.match(p.name)), reverse=True)[:limit]
    messages = []
    for name in names:
        headers = _parse(directory / name, headers_only=True)
        messages.append(
            CapturedMessage(
                name=name,
                received_at=datetime.strptime(name[:20], "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC),
                mail_from=str(headers.get("From", headers.get("X-Envelope-From", ""))),
                to=str(headers.get("To", headers.get("X-Envelope-To", ""))),
                subject=str(headers.get("Subject", "")),
            )
        )
    return messages


def captured_mail_get(*, directory: Path, name: str) -> tuple[EmailMessage, bytes] | None:
    """The parsed message and its raw bytes, or None for an unknown or malformed name."""
    if not MESSAGE_FILE.match(name) or not (directory / name).is_file():
        return None
    return _parse(directory / name, headers_only=False), (directory / name).read_bytes()
