"""Structural rules: what a message's headers and MIME structure say about it, before any text is read.

`structure_read` collects the facts once; `rule_decide` turns the unambiguous ones into a verdict (bounce, auto-reply,
calendar invite, bulk mail, reply) and leaves ambiguous combinations (a newsletter carrying an invite, a reply that
introduces someone) to the model, which also sees the facts as tokens (`Structure.tokens`). References: RFC 3464
(delivery status), RFC 3834 (Auto-Submitted), RFC 5546 (iTIP METHOD), RFC 2369/8058 (List-Unsubscribe), Discourse's
`Email::Receiver#is_auto_generated?` (subject list, X-Auto-Response-Suppress ignored)."""

import re
from dataclasses import dataclass, field

from processing.parsing import ParsedEmail

# Discourse's list (lib/email/receiver.rb) plus EmailEngine's OOF:/OOO:, anchored at the subject's start.
_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?\s*(reply|response|antwort)|auto:|out\s+of(\s+the)?\s+office|ooo\b|oof\b|autosvar|"
    r"automatisk\s+svar|abwesenheitsnotiz|abwesenheit|automatische\s+antwort|r[ée]ponse\s+automatique|"
    r"absence\s+du\s+bureau|respuesta\s+autom[áa]tica|fuera\s+de\s+la\s+oficina|risposta\s+automatica|"
    r"automatisch\s+antwoord|resposta\s+autom[áa]tica|automaattinen\s+vastaus|automatyczna\s+odpowied[źz]|"
    r"otomatik\s+yan[ıi]t|自動応答|自动回复)",
    re.IGNORECASE,
)
_BOUNCE_SENDER = re.compile(r"^(mailer[-_]?daemon|post[-_]?master)@", re.IGNORECASE)
_BOUNCE_SUBJECT = re.compile(
    r"(undeliver|undelivered|delivery\s+(status\s+notification|failure|has\s+failed|failed|delayed)|"
    r"returned\s+mail|mail\s+delivery\s+failed|failure\s+notice|could\s+not\s+be\s+delivered|"
    r"unzustellbar|nicht\s+zustellbar|non\s+remis|[ée]chec\s+de\s+(la\s+)?remise|no\s+se\s+puede\s+entregar|"
    r"non\s+recapitabile|onbestelbaar|n[ãa]o\s+foi\s+poss[íi]vel\s+entregar)",
    re.IGNORECASE,
)
_AUTO_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder")
_ESP_HEADERS = ("Feedback-ID", "X-Campaign-Id", "X-Mailgun-Tag", "X-SES-Outgoing", "X-Mailchimp-Campaign")
_METHOD = re.compile(r"^METHOD:\s*([A-Z-]+)", re.MULTILINE | re.IGNORECASE)
_REPLY_SUBJECT = re.compile(r"^\s*(re|aw|sv|vs|r|rif|res|antw|wg|fw|fwd|tr)\s*(\[\d+\])?\s*:", re.IGNORECASE)
_REPORT_TYPES = ("message/delivery-status", "message/global-delivery-status")


@dataclass
class Structure:
    """The structural facts of one message, each a short name (stored in the verdict's signals)."""

    facts: dict[str, str] = field(default_factory=dict)

    def tokens(self) -> str:
        """The facts as pseudo-words the text model is trained on (its few header features)."""
        return " ".join(f"zz{name.replace('_', '')}" for name in self.facts)


def structure_read(parsed: ParsedEmail) -> Structure:
    facts: dict[str, str] = {}
    types = parsed.content_types
    if any(kind in types for kind in _REPORT_TYPES):
        facts["dsn"] = "message/delivery-status"
    if "message/feedback-report" in types:
        facts["arf"] = "message/feedback-report"
    if parsed.header("X-Failed-Recipients"):
        facts["failed_recipients"] = "X-Failed-Recipients"
    if _BOUNCE_SENDER.match(parsed.sender):
        facts["daemon_sender"] = parsed.sender
    if _BOUNCE_SUBJECT.search(parsed.subject):
        facts["bounce_subject"] = parsed.subject[:80]
    auto_submitted = parsed.header("Auto-Submitted").strip().lower()
    if auto_submitted and not auto_submitted.startswith("no"):
        facts["auto_submitted"] = auto_submitted[:40]
    precedence = parsed.header("Precedence").strip().lower()
    if precedence in ("auto_reply", "auto-reply"):
        facts["precedence_auto"] = precedence
    elif precedence in ("bulk", "list", "junk"):
        facts["precedence_bulk"] = precedence
    for name in _AUTO_HEADERS:
        if parsed.header(name):
            facts["autoreply_header"] = name
    if _AUTO_SUBJECT.match(parsed.subject):
        facts["auto_subject"] = parsed.subject[:80]
    if parsed.header("List-Unsubscribe"):
        facts["list_unsubscribe"] = "List-Unsubscribe"
    if parsed.header("List-Id"):
        facts["list_id"] = parsed.header("List-Id")[:80]
    for name in _ESP_HEADERS:
        if parsed.header(name):
            facts["esp_header"] = name
    method = _calendar_method(parsed)
    if method:
        facts["calendar"] = method
    if parsed.in_reply_to or parsed.references:
        facts["in_reply_to"] = "In-Reply-To" if parsed.in_reply_to else "References"
    if _REPLY_SUBJECT.match(parsed.subject):
        facts["reply_subject"] = parsed.subject[:80]
    if parsed.html:
        facts["html"] = "text/html"
    return Structure(facts)


def _calendar_method(parsed: ParsedEmail) -> str:
    """The iTIP METHOD of the first text/calendar part ("" when none): the part's parameter, else its body."""
    if "text/calendar" not in parsed.content_types and "application/ics" not in parsed.content_types:
        return ""
    try:
        for part in parsed.message.walk():
            if part.get_content_type() not in ("text/calendar", "application/ics"):
                continue
            method = part.get_param("method")
            if isinstance(method, str) and method:
                return method.upper()
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                found = _METHOD.search(payload[:20000].decode("utf-8", errors="replace"))
                return found.group(1).upper() if found else "NONE"
    except Exception:  # noqa: BLE001 - a broken part is no calendar
        return ""
    return ""


@dataclass(frozen=True)
class RuleVerdict:
    classification: str
    confidence: float
    rule: str
    needs_model: bool = False  # the rule holds only if the text does not strongly say otherwise


def rule_decide(structure: Structure) -> RuleVerdict | None:
    """The class the structure alone decides, or None when it is ambiguous and the model must read the text."""
    f = structure.facts
    bulk = "list_unsubscribe" in f or "precedence_bulk" in f or "esp_header" in f
    if "dsn" in f:
        return RuleVerdict("bounce", 0.99, "rfc3464_delivery_status")
    if "arf" in f:
        return RuleVerdict("bounce", 0.97, "rfc5965_feedback_report")
    if "failed_recipients" in f:
        return RuleVerdict("bounce", 0.97, "x_failed_recipients")
    if "daemon_sender" in f and "bounce_subject" in f:
        return RuleVerdict("bounce", 0.97, "daemon_sender_bounce_subject")
    if "daemon_sender" in f:
        return RuleVerdict("bounce", 0.85, "daemon_sender", needs_model=True)
    auto = "auto_submitted" in f or "precedence_auto" in f or "autoreply_header" in f
    if auto and bulk:
        return None  # an automated newsletter: let the text decide
    if "auto_submitted" in f and f["auto_submitted"].startswith("auto-generated") and "calendar" in f:
        return RuleVerdict("meeting", 0.97, "itip_method_auto_generated")
    if "auto_submitted" in f and f["auto_submitted"].startswith("auto-generated"):
        return RuleVerdict("auto_reply", 0.85, "rfc3834_auto_generated", needs_model=True)
    if auto:
        return RuleVerdict(
            "auto_reply", 0.97, "rfc3834_auto_submitted" if "auto_submitted" in f else "autoreply_header"
        )
    if "auto_subject" in f and "calendar" not in f:
        return RuleVerdict("auto_reply", 0.93, "auto_reply_subject")
    if "calendar" in f and f["calendar"] != "PUBLISH" and not bulk:
        return RuleVerdict("meeting", 0.98, f"itip_method_{f['calendar'].lower()}")
    if "calendar" in f:
        return None  # an invite in a newsletter, or a published calendar: the text decides
    if bulk and "in_reply_to" not in f and "reply_subject" not in f:  # "Re:" on a list: a discussion, not marketing
        return RuleVerdict("promotion", 0.92, "list_unsubscribe" if "list_unsubscribe" in f else "bulk_headers",
                           needs_model=True)  # fmt: skip
    if "in_reply_to" in f and not bulk:
        return RuleVerdict("reply", 0.93, "in_reply_to", needs_model=True)
    return None
