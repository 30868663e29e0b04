"""What an inbound message is, read from the message alone (no database): a bounce and whom it reports, an
automatic answer (and until when its author is away), an unsubscribe request in the author's own text.

Bounces: RFC 3464 delivery-status reports with the standard library (per recipient: Final-Recipient, Action,
Status, Diagnostic-Code); the formats real MTAs send instead (qmail, Exim's, Postfix's older ones...) with
flufl.bounce, whose permanent failures are hard bounces and temporary ones soft. The original send is found
through the returned message's headers (our Message-ID, our X-Emailsys-Send), never guessed.
"""

import logging
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from email.message import Message

import flufl.bounce
import quotequail

from campaigns.services.templating import SEND_REFERENCE_HEADER
from processing.parsing import ParsedEmail, message_ids

logging.getLogger("flufl.bounce").setLevel(logging.WARNING)  # it logs every detector it runs, at INFO

# --- bounces ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BouncedAddress:
    email: str
    hard: bool
    status: str = ""  # the enhanced status code, "5.1.1"
    diagnostic: str = ""


@dataclass
class BounceReport:
    addresses: list[BouncedAddress]
    message_ids: list[str] = field(default_factory=list)  # our original's Message-ID(s), with <>
    send_reference: str = ""  # our original's X-Emailsys-Send, if the bounce returned it


_MAILER_DAEMON = re.compile(r"^(mailer[-_]?daemon|post[-_]?master|mail[-_]?delivery[-_]?subsystem)@", re.IGNORECASE)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (status notification|failure|has failed)|returned mail|failure notice|"
    r"mail delivery failed|delivery not possible|unzustellbar|non remis|no se pudo entregar",
    re.IGNORECASE,
)
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_ADDRESS_TYPE = re.compile(r"^\s*[\w-]+\s*;\s*", re.ASCII)
_HEADER_LINE = re.compile(rb"^(Message-ID|X-Emailsys-Send)\s*:\s*(.+)$", re.IGNORECASE | re.MULTILINE)


def bounce_candidate(parsed: ParsedEmail) -> bool:
    """Cheap test before any bounce parsing (most inbound mail is not one): a report, a mailer-daemon sender,
    X-Failed-Recipients or a bounce subject."""
    message = parsed.message
    return (
        message.get_content_type() == "multipart/report"
        or bool(_MAILER_DAEMON.match(parsed.sender or ""))
        or bool(parsed.header("X-Failed-Recipients"))
        or bool(_BOUNCE_SUBJECT.search(parsed.subject or ""))
    )


def bounce_parse(parsed: ParsedEmail) -> BounceReport | None:
    """The addresses this bounce reports, hard or soft (a "delayed" DSN is a soft one: it counts toward the
    account's health, suppresses nothing), and the original's references; None when it is not a bounce."""
    if not bounce_candidate(parsed):
        return None
    message = parsed.message
    addresses = _dsn_addresses(message)
    if not addresses:  # no delivery-status part, or one without a failed or delayed recipient block
        addresses = _flufl_addresses(message)
    if not addresses:
        return None
    ids, reference = _original_references(message)
    return BounceReport(addresses=addresses, message_ids=ids, send_reference=reference)


def _dsn_addresses(message: Message) -> list[BouncedAddress] | None:
    """RFC 3464: None when the message has no delivery-status part (not a DSN: flufl.bounce's turn)."""
    for part in message.walk():
        if part.get_content_type() not in ("message/delivery-status", "message/global-delivery-status"):
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list):
            return None
        found = []
        for block in blocks[1:]:  # [0] is the per-message block (Reporting-MTA, Arrival-Date)
            action = str(block.get("Action", "")).strip().lower()
            # Original-Recipient is the address we wrote to (Final-Recipient may be an alias it expanded to).
            named = block.get("Original-Recipient") or block.get("Final-Recipient") or ""
            recipient = _ADDRESS_TYPE.sub("", str(named))
            status_match = _STATUS.search(str(block.get("Status", "")))
            diagnostic = " ".join(str(block.get("Diagnostic-Code", "")).split())
            if not status_match:
                status_match = _STATUS.search(diagnostic)
            status = status_match.group(0) if status_match else ""
            if action not in ("failed", "delayed", "") or "@" not in recipient:
                continue  # delivered, relayed, expanded: nothing bounced
            if action == "" and not status:
                continue
            # "failed" with 5.x.x (or no status) is permanent; 4.x.x, or "delayed" (the MTA still tries), is soft.
            hard = action != "delayed" and (status.startswith("5") if status else True)
            found.append(BouncedAddress(recipient.strip().strip("<>").lower(), hard, status, diagnostic[:1000]))
        return found
    return None


def _flufl_addresses(message: Message) -> list[BouncedAddress]:
    try:
        temporary, permanent = flufl.bounce.all_failures(message)
    except Exception:  # noqa: BLE001 - a detector choking on odd mail means "no bounce we can read"
        logging.getLogger(__name__).warning("flufl.bounce failed on a bounce candidate", exc_info=True)
        return []
    text = _message_text(message)
    found: dict[str, BouncedAddress] = {}
    for hard, addresses in ((False, temporary), (True, permanent)):
        for raw in addresses:
            address = raw.decode("utf-8", "replace").strip().strip("<>").lower()
            if "@" not in address:
                continue
            status = _status_near(text, address, hard)
            found[address] = BouncedAddress(address, hard, status)
    return list(found.values())


def _status_near(text: str, address: str, hard: bool) -> str:
    """The enhanced status code given with the address in the bounce's text, when there is one of its class."""
    index = text.lower().find(address)
    window = text[index : index + 600] if index >= 0 else text
    for match in _STATUS.finditer(window):
        if match.group(1) == ("5" if hard else "4"):
            return match.group(0)
    return ""


def _message_text(message: Message) -> str:
    chunks = []
    for part in message.walk():
        if part.get_content_maintype() == "text" and part.get_content_type() != "text/rfc822-headers":
            payload = part.get_payload(decode=True) or b""
            chunks.append(payload.decode(part.get_content_charset() or "utf-8", "replace"))
    return "\n".join(chunks)


def _original_references(message: Message) -> tuple[list[str], str]:
    """Our Message-ID and X-Emailsys-Send from the returned original: a message/rfc822 part (parsed), a
    text/rfc822-headers part, or (non-standard bounces) the original's headers pasted into the text."""
    ids: list[str] = []
    reference = ""
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            original = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(original, Message):
                ids += [f"<{value}>" for value in message_ids(str(original.get("Message-ID", "")))]
                reference = reference or str(original.get(SEND_REFERENCE_HEADER, "")).strip()
        elif kind == "text/rfc822-headers" or part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True) or b""
            for name, value in _HEADER_LINE.findall(payload):
                value = value.decode("ascii", "replace").strip()
                if name.lower() == b"message-id":
                    ids += [f"<{found}>" for found in message_ids(value)]
                else:
                    reference = reference or value
    return list(dict.fromkeys(ids)), reference


def send_reference_parse(value: str) -> tuple[str, str] | None:
    """("c" | "m", "<message id>") from an X-Emailsys-Send value; None when it is not ours."""
    kind, _, rest = value.strip().partition(".")
    if kind not in ("c", "m") or "@" not in rest or " " in rest:
        return None
    return kind, f"<{rest}>"


# --- automatic answers -----------------------------------------------------------------------------------------

_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ _-]?(reply|response|answer)|autoreply|auto:|out of( the)? office|ooo\b|oof\b|"
    r"away from (the )?office|on vacation|on holiday|"
    r"abwesenheit|automatische antwort|nicht im b[üu]ro|"  # de
    r"r[ée]ponse automatique|absence|absent du bureau|"  # fr
    r"respuesta autom[áa]tica|fuera de (la )?oficina|ausencia|"  # es
    r"resposta autom[áa]tica|fora do escrit[óo]rio|aus[êe]ncia|"  # pt
    r"risposta automatica|fuori ufficio|assenza|"  # it
    r"automatisch antwoord|afwezig|niet op kantoor|"  # nl
    r"autosvar|automaattinen vastaus)",  # sv/no/da, fi
    re.IGNORECASE,
)
_AUTO_BODY = re.compile(
    r"\b(i am|i'm|i will be) (currently )?(out of( the)? office|away|on (vacation|holiday|leave|annual leave))|"
    r"out of (the )?office (until|till|through)|"
    r"ich bin (derzeit |zurzeit |bis .{1,30} )?(nicht im b[üu]ro|abwesend|im urlaub)|"
    r"je suis (actuellement )?(absent|absente|en cong[ée]s?)|"
    r"estoy (fuera de la oficina|de vacaciones|ausente)|"
    r"estou (fora do escrit[óo]rio|de f[ée]rias|ausente)|"
    r"sono (fuori ufficio|in ferie|assente)|"
    r"ik ben (momenteel |tot .{1,30} )?(afwezig|niet op kantoor|met vakantie)",
    re.IGNORECASE,
)
_AUTO_HEADER = re.compile(r"^x-auto[-_]?(reply|respon[ds]e?r?|responder|submitted)$|^x-autoreply$", re.IGNORECASE)


def auto_reply_detect(parsed: ParsedEmail) -> str:
    """Why this is an automatic answer ("" when it is not one): RFC 3834 Auto-Submitted other than "no",
    Precedence auto_reply (bulk, junk, list too), vendor X-Autoreply-style headers, or a known vacation
    subject or sentence. X-Auto-Response-Suppress is not one of them: ordinary Outlook mail carries it."""
    submitted = parsed.header("Auto-Submitted").strip().lower()
    if submitted and not submitted.startswith("no"):
        return f"Auto-Submitted: {submitted}"
    precedence = parsed.header("Precedence").strip().lower()
    if precedence in ("auto_reply", "bulk", "junk", "list"):
        return f"Precedence: {precedence}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Auto-Reply", "X-Auto-Response"):
        if parsed.header(name):
            return f"{name} header"
    if _AUTO_SUBJECT.search(_strip_reply_prefix(parsed.subject or "")):
        return "vacation subject"
    text = reply_own_text(parsed.text or "")
    if _AUTO_BODY.search(text[:2000]):
        return "vacation text"
    return ""


def _strip_reply_prefix(subject: str) -> str:
    return re.sub(r"^\s*((re|aw|sv|fw|fwd|wg|tr|r)\s*:\s*)+", "", subject, flags=re.IGNORECASE)


_MONTHS = {
    **dict.fromkeys(["january", "jan", "januar", "janvier", "enero", "janeiro", "gennaio", "januari"], 1),
    **dict.fromkeys(
        ["february", "feb", "februar", "février", "fevrier", "febrero", "fevereiro", "febbraio", "februari"], 2
    ),  # fmt: skip
    **dict.fromkeys(["march", "mar", "märz", "maerz", "mars", "marzo", "março", "marco", "maart"], 3),
    **dict.fromkeys(["april", "apr", "avril", "abril", "aprile"], 4),
    **dict.fromkeys(["may", "mai", "mayo", "maio", "maggio", "mei"], 5),
    **dict.fromkeys(["june", "jun", "juni", "juin", "junio", "junho", "giugno"], 6),
    **dict.fromkeys(["july", "jul", "juli", "juillet", "julio", "julho", "luglio"], 7),
    **dict.fromkeys(["august", "aug", "août", "aout", "agosto", "augustus"], 8),
    **dict.fromkeys(["september", "sep", "sept", "septembre", "septiembre", "setembro", "settembre"], 9),
    **dict.fromkeys(["october", "oct", "oktober", "octobre", "octubre", "outubro", "ottobre"], 10),
    **dict.fromkeys(["november", "nov", "novembre", "noviembre", "novembro"], 11),
    **dict.fromkeys(["december", "dec", "dezember", "décembre", "decembre", "diciembre", "dezembro", "dicembre"], 12),
}
_UNTIL = (
    r"(?:until|till|through|returning(?: on)?|back(?: in the office)? on|bis(?: zum| einschließlich| einschliesslich)?|"
    r"jusqu'?au|jusqu’au|hasta el|hasta|até(?: o dia| dia)?|fino al|fino a|tot en met|tot)"
)
_MONTH_NAMES = "|".join(sorted((re.escape(name) for name in _MONTHS), key=len, reverse=True))
_DATE_FORMS = [
    ("iso", re.compile(_UNTIL + r"\s+(?:\w+,?\s+)?(\d{4})-(\d{1,2})-(\d{1,2})\b", re.IGNORECASE)),
    ("dmy", re.compile(_UNTIL + r"\s+(?:\w+,?\s+)?(\d{1,2})[./](\d{1,2})[./](\d{2,4})?", re.IGNORECASE)),
    (
        "d_month",
        re.compile(
            _UNTIL + rf"\s+(?:\w+,?\s+)?(\d{{1,2}})\.?(?:st|nd|rd|th)?\s+(?:de\s+)?({_MONTH_NAMES})\.?"
            r"(?:\s+(?:de\s+)?(\d{4}))?",
            re.IGNORECASE,
        ),
    ),  # fmt: skip
    (
        "month_d",
        re.compile(
            _UNTIL + rf"\s+(?:\w+,?\s+)?({_MONTH_NAMES})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?"
            r"(?:,?\s+(\d{4}))?",
            re.IGNORECASE,
        ),
    ),  # fmt: skip
]


def away_until_parse(text: str, *, today: date) -> date | None:
    """The last day of an absence announced as "away until <date>" (several languages and date forms: ISO,
    15.12.2026, 15/12, 15 December 2026, December 15th, 15. Dezember, 15 de diciembre). Day-first for numeric
    dates; a date without a year is the next such day. None when unparsable, past, or over 90 days ahead."""
    for form, pattern in _DATE_FORMS:
        for match in pattern.finditer(text[:4000]):
            found = _date_of(form, match.groups(), today)
            if found is not None and today <= found <= today + timedelta(days=90):
                return found
    return None


def _date_of(form: str, groups: tuple, today: date) -> date | None:
    try:
        if form == "iso":
            return date(int(groups[0]), int(groups[1]), int(groups[2]))
        if form == "dmy":
            day, month, year = int(groups[0]), int(groups[1]), groups[2]
        elif form == "d_month":
            day, month, year = int(groups[0]), _MONTHS[groups[1].lower()], groups[2]
        else:
            month, day, year = _MONTHS[groups[0].lower()], int(groups[1]), groups[2]
        if year:
            year = int(year)
            return date(year + 2000 if year < 100 else year, month, day)
        found = date(today.year, month, day)
        return found if found >= today else date(today.year + 1, month, day)
    except (ValueError, KeyError):
        return None


# --- unsubscribe requests --------------------------------------------------------------------------------------

_UNSUBSCRIBE = re.compile(
    r"\bunsubscribe\b|\bremove me\b|\btake me off\b|\bopt[- ]?out\b|\bstop (e-?mailing|sending|contacting) me\b|"
    r"\bdo not (contact|e-?mail) me\b|\bdon'?t (contact|e-?mail) me\b|"
    r"\babmelden\b|\babbestellen\b|\baustragen\b|\bbitte entfernen\b|\bkeine (weiteren )?(e-?mails|nachrichten)\b|"
    r"d[ée]sinscri(re|vez|ption)|d[ée]sabonne|\bne plus recevoir\b|\bretirez[- ]moi\b|"
    r"\bdar(me|se)? de baja\b|\bdarme de baja\b|\bno (me )?(escriba|envíe|envie)s?\b|\bborr(en|ar)me\b|"
    r"\bdescadastr|\bcancelar (a )?inscri[çc][ãa]o\b|\bremover[- ]me\b|\bn[ãa]o quero receber\b|"
    r"\bcancellami\b|\bdisiscriv|\brimuovimi\b|\bnon voglio (più )?ricevere\b|"
    r"\bafmelden\b|\buitschrijven\b|\bverwijder (mij|me)\b",
    re.IGNORECASE,
)
_LINK = re.compile(r"https?://\S+", re.IGNORECASE)


def reply_own_text(text: str) -> str:
    """The author's own words: quoted text ("On … wrote:", "> …", Outlook's original-message block) and any
    unsubscribe link line (a quote of our own footer, "Abmelden: https://…") removed."""
    text = text.replace("\r\n", "\n")
    try:
        parts = quotequail.quote(text, limit=2000)
        own = "\n".join(chunk for expanded, chunk in parts if expanded)
    except Exception:  # noqa: BLE001 - a text quotequail cannot split is taken whole (the filters below still run)
        own = text
    lines = [line for line in own.split("\n") if not line.lstrip().startswith(">")]
    # A line with a link and an unsubscribe word is a footer (ours, in any language), never the author's request.
    return "\n".join(line for line in lines if not (_LINK.search(line) and _UNSUBSCRIBE.search(line)))


def unsubscribe_requested(parsed: ParsedEmail) -> bool:
    """An unsubscribe request in the reply's own text, or as its subject (a mailto: List-Unsubscribe)."""
    subject = parsed.subject or ""
    if subject and not re.match(r"^\s*(re|aw|sv|fw|fwd|wg|tr)\s*:", subject, re.IGNORECASE):
        if _UNSUBSCRIBE.search(subject):
            return True
    return bool(_UNSUBSCRIBE.search(reply_own_text(parsed.text or "")[:5000]))
