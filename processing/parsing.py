"""Raw RFC 5322 bytes → what the columns, the classifier and the pages read. Never raises: any input is mail
someone sent us, and a header that does not parse leaves its field empty and says why in `errors`."""

import email
import email.header
import email.policy
import email.utils
import html
import re
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage, Message

_TAG = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.IGNORECASE | re.DOTALL)
_MESSAGE_ID = re.compile(r"<([^<>\s]+)>")
_SPACES = re.compile(r"[ \t\r\f\v]+")
_LINESEP = re.compile(r"\n|\r")
_HEADER_CACHE: dict[tuple[str, str], object] = {}
_HEADER_CACHE_SIZE = 4096


class _CachedHeaderPolicy(email.policy.EmailPolicy):
    """policy.default, but a header value is parsed into its header object once, not on every `get`: the stdlib
    re-parses Content-Type each time a part's type, charset or disposition is read, which made parsing 3 ms a
    message. Header objects are immutable strings, so sharing them (also across messages) is safe."""

    def header_fetch_parse(self, name, value):  # noqa: ANN001, ANN201 - the stdlib's signature
        if hasattr(value, "name"):
            return value
        key = (name.lower(), value)
        header = _HEADER_CACHE.get(key)
        if header is None:
            if len(_HEADER_CACHE) >= _HEADER_CACHE_SIZE:
                _HEADER_CACHE.clear()
            header = _HEADER_CACHE[key] = self.header_factory(name, "".join(_LINESEP.split(value)))
        return header


_POLICY = _CachedHeaderPolicy()


@dataclass
class ParsedEmail:
    message: Message  # the stdlib's parse (policy.default where it worked, compat32 otherwise)
    subject: str = ""
    sender: str = ""  # the From address, lower-case
    sender_name: str = ""
    recipients: list[str] = field(default_factory=list)  # To and Cc, lower-case
    message_id: str = ""  # without <>
    in_reply_to: str = ""
    references: list[str] = field(default_factory=list)
    sent_at: datetime | None = None
    text: str = ""  # the text/plain parts, or the HTML parts as text
    html: str = ""
    content_types: list[str] = field(default_factory=list)  # every part's type, in walk order
    errors: list[str] = field(default_factory=list)
    _raw_headers: dict[str, list] | None = field(default=None, repr=False, compare=False)  # lower-case name → values

    def header(self, name: str) -> str:
        """The first value of a header as text, "" when absent or unreadable."""
        values = self.headers(name)
        return values[0] if values else ""

    def headers(self, name: str) -> list[str]:
        """Every value of a header as text. A plain ASCII value is read as it stands (unfolded); one with encoded
        words is decoded with email.header; one with 8-bit bytes goes through the stdlib's (slower) header parser."""
        try:
            if self._raw_headers is None:
                self._raw_headers = {}
                for key, value in self.message.raw_items():
                    self._raw_headers.setdefault(key.lower(), []).append((key, value))
            found = []
            for key, value in self._raw_headers.get(name.lower(), ()):
                if isinstance(value, str) and value.isascii():
                    found.append(_ascii_header("".join(_LINESEP.split(value))))
                else:
                    found.append(str(self.message.policy.header_fetch_parse(key, value)))
            return found
        except Exception:  # noqa: BLE001 - a broken header is absent for readers
            return []


def _ascii_header(value: str) -> str:
    """An ASCII header value as text: RFC 2047 encoded words decoded (leniently), the rest as it stands."""
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:  # noqa: BLE001 - bad encoded word or unknown charset: the stdlib's parser is lenient
        return str(_POLICY.header_fetch_parse("X", value))


def html_to_text(markup: str) -> str:
    return _SPACES.sub(" ", html.unescape(_TAG.sub(" ", markup))).strip()


def message_ids(value: str) -> list[str]:
    """The ids in a Message-ID / In-Reply-To / References header, without <>, in order."""
    found = _MESSAGE_ID.findall(value or "")
    return found or ([value.strip()] if value and value.strip() and " " not in value.strip() else [])


def email_parse(raw: bytes) -> ParsedEmail:
    try:
        message = email.message_from_bytes(raw, policy=_POLICY)
    except Exception as error:  # noqa: BLE001
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
        parsed = ParsedEmail(message=message, errors=[f"parse: {type(error).__name__}: {error}"])
    else:
        parsed = ParsedEmail(message=message)
    _fill(parsed)
    return parsed


def _fill(parsed: ParsedEmail) -> None:
    for name, reader in (
        ("subject", lambda: _one_line(parsed.header("Subject"))),
        ("sender", lambda: _sender(parsed)),
        ("recipients", lambda: _addresses(parsed, "To") + _addresses(parsed, "Cc")),
        ("message_id", lambda: (message_ids(parsed.header("Message-ID")) or [""])[0]),
        ("in_reply_to", lambda: (message_ids(parsed.header("In-Reply-To")) or [""])[0]),
        ("references", lambda: message_ids(parsed.header("References"))),
        ("sent_at", lambda: _date(parsed.header("Date"))),
    ):
        try:
            value = reader()
        except Exception as error:  # noqa: BLE001
            parsed.errors.append(f"{name}: {type(error).__name__}: {error}")
            continue
        if name == "sender":
            parsed.sender_name, parsed.sender = value
        else:
            setattr(parsed, name, value)
    _bodies(parsed)


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _sender(parsed: ParsedEmail) -> tuple[str, str]:
    name, address = email.utils.parseaddr(parsed.header("From"))
    return _one_line(name), address.strip().lower()


def _addresses(parsed: ParsedEmail, header: str) -> list[str]:
    return [address.strip().lower() for _, address in email.utils.getaddresses(parsed.headers(header)) if address]


def _date(value: str) -> datetime | None:
    if not value:
        return None
    moment = email.utils.parsedate_to_datetime(value)
    return moment if moment.tzinfo else None


def _bodies(parsed: ParsedEmail) -> None:
    texts: list[str] = []
    htmls: list[str] = []
    try:
        for part in parsed.message.walk():
            content_type = part.get_content_type()
            parsed.content_types.append(content_type)
            if part.is_multipart() or part.get_content_disposition() == "attachment":
                continue
            if content_type in ("text/plain", "text/html"):
                content = _part_text(part, parsed)
                (texts if content_type == "text/plain" else htmls).append(content)
    except Exception as error:  # noqa: BLE001
        parsed.errors.append(f"body: {type(error).__name__}: {error}")
    parsed.html = "\n".join(htmls)
    parsed.text = "\n".join(texts).strip() or html_to_text(parsed.html)


def _part_text(part: Message, parsed: ParsedEmail) -> str:
    try:
        if isinstance(part, EmailMessage):
            return part.get_content()
    except Exception as error:  # noqa: BLE001 - unknown charset, bad transfer encoding: decode leniently
        parsed.errors.append(f"part {part.get_content_type()}: {type(error).__name__}: {error}")
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload.decode(part.get_content_charset() or "utf-8", errors="replace") if _known_charset(part) \
            else payload.decode("utf-8", errors="replace")  # fmt: skip
    return str(part.get_payload() or "")


def _known_charset(part: Message) -> bool:
    import codecs

    try:
        codecs.lookup(part.get_content_charset() or "utf-8")
    except LookupError:
        return False
    return True
