"""Builds corpus.jsonl from fragments.py: each core becomes VARIANTS RFC 5322 messages that differ in names, dates,
greeting, length, HTML or plain, and in how much structure they carry (a newsletter without List-Unsubscribe, an
out-of-office without Auto-Submitted, a bounce without a DSN, a reply without In-Reply-To), so the model learns
the text and the rules are not the only thing that works. Deterministic: `python -m
processing.classifier.corpus.build` rewrites the same file."""

import email
import email.policy
import json
import random
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from processing.classifier.corpus.fragments import (
    CLOSINGS,
    COMPANIES,
    CORES,
    DAYS,
    FILLER,
    GREETINGS,
    NAMES,
    PRODUCTS,
    TIMES,
)

VARIANTS = 5
CORPUS_PATH = Path(__file__).with_name("corpus.jsonl")
ORIGINAL_SUBJECTS = [
    "Partnership proposal",
    "Invoice 2231",
    "Quick question",
    "Your demo request",
    "Angebot",
    "Proposition commerciale",
    "Propuesta",
    "Follow-up",
]


def corpus_build() -> list[dict]:
    rows = []
    for group, (label, lang, subject, body, kind) in enumerate(CORES):
        for variant in range(VARIANTS):
            rng = random.Random(f"{group}:{variant}")
            raw = _message(rng, lang, subject, body, kind, variant)
            rows.append({"group": group, "label": label, "lang": lang, "kind": kind, "raw": raw})
    return rows


def _fill(rng: random.Random, lang: str, template: str, values: dict) -> str:
    return template.format(**values)


def _message(rng: random.Random, lang: str, subject: str, body: str, kind: str, variant: int) -> str:
    name, me = rng.choice(NAMES), rng.choice([n for n in NAMES])
    company = rng.choice(COMPANIES)
    domain = company.lower().replace(" ", "") + rng.choice([".com", ".de", ".fr", ".es", ".io"])
    values = {
        "name": name.split()[0] if rng.random() < 0.5 else name,
        "me": me.split()[0],
        "company": company,
        "product": rng.choice(PRODUCTS),
        "day": rng.choice(DAYS.get(lang, DAYS["en"])),
        "time": rng.choice(TIMES),
        "pct": rng.choice([10, 15, 20, 25, 30, 40, 50, 70]),
        "num": rng.randint(10000, 99999),
        "rcpt": rng.choice(["j.smith", "info", "sales", "anna.k", "contact"])
        + "@"
        + rng.choice(["example.org", "mail.example.net", "corp.example.com"]),
        "domain": domain,
        "subject": rng.choice(ORIGINAL_SUBJECTS),
    }
    subject_text, body_text = subject.format(**values), body.format(**values)
    # structure is stripped from every fifth variant (the model must also know the class from its text)
    bare = variant == VARIANTS - 1 and kind not in ("reply_bare", "plain", "daemon_plain")
    message = EmailMessage()
    sender_name, sender = _sender(rng, kind, name, domain, bare)
    message["From"] = f"{sender_name} <{sender}>" if sender_name else sender
    message["To"] = f"{me} <{me.split()[0].lower()}@emailsys.example>"
    message["Subject"] = subject_text
    sent = datetime(2026, 1, 5, 8, tzinfo=UTC) + timedelta(minutes=rng.randint(0, 400000))
    message["Date"] = format_datetime(sent)
    message["Message-ID"] = _msgid(rng, domain.split(".")[0] + ".example")
    _headers(rng, message, kind, bare)
    text = _body(rng, lang, body_text, values, kind, variant, sent)
    if kind in ("dsn",) and not bare:
        _dsn(message, text, values, rng)
    elif kind in ("ics", "bulk_ics") and not bare:
        _ics(message, text, subject_text, kind, rng)
    elif kind in ("bulk", "bulk_ics") or rng.random() < 0.3:
        message.set_content(text)
        message.add_alternative(_html(text, kind), subtype="html")
    else:
        message.set_content(text)
    for part in message.walk():  # the generator would pick random boundaries: fix them, so rebuilds are identical
        if part.is_multipart():
            part.set_boundary(f"=={rng.getrandbits(64):016x}==")
    return message.as_string()


def _msgid(rng: random.Random, domain: str) -> str:
    return f"<{rng.getrandbits(64):016x}@{domain}>"


def _sender(rng: random.Random, kind: str, name: str, domain: str, bare: bool) -> tuple[str, str]:
    if kind in ("dsn", "daemon") and not bare:
        return rng.choice(
            [
                ("Mail Delivery Subsystem", f"mailer-daemon@{domain}"),
                ("", f"MAILER-DAEMON@mx.{domain}"),
                ("Mail Delivery System", f"postmaster@{domain}"),
            ]
        )
    if kind == "daemon_plain" or (kind in ("dsn", "daemon") and bare):
        return rng.choice(
            [("Mail System", f"no-reply@{domain}"), ("Postmaster", f"postmaster@{domain}"), ("", f"bounces@{domain}")]
        )
    if kind in ("bulk", "bulk_ics"):
        return rng.choice(
            [
                (domain.split(".")[0].title(), f"news@{domain}"),
                ("", f"hello@{domain}"),
                (f"{name} at {domain.split('.')[0].title()}", f"marketing@{domain}"),
            ]
        )
    first, *rest = name.lower().split()
    return name, f"{first}.{rest[0] if rest else 'x'}@{domain}"


def _headers(rng: random.Random, message: EmailMessage, kind: str, bare: bool) -> None:
    if bare:
        return
    if kind in ("bulk", "bulk_ics"):
        message["List-Unsubscribe"] = "<https://list.example.com/u/8e1f>, <mailto:unsub@list.example.com>"
        if rng.random() < 0.5:
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        if rng.random() < 0.4:
            message["Precedence"] = "bulk"
        if rng.random() < 0.3:
            message["Feedback-ID"] = "c123:campaign:esp"
    elif kind in ("reply", "reply_intro"):
        parent = _msgid(rng, "emailsys.example")
        message["In-Reply-To"] = parent
        message["References"] = f"{_msgid(rng, 'emailsys.example')} {parent}" if rng.random() < 0.5 else parent
    elif kind == "auto":
        choice = rng.randrange(4)
        if choice == 0:
            message["Auto-Submitted"] = "auto-replied"
        elif choice == 1:
            message["X-Autoreply"] = "yes"
            message["Auto-Submitted"] = "auto-replied"
        elif choice == 2:
            message["Precedence"] = "auto_reply"
        # choice 3: only the subject says it (Exchange's "Automatic reply:" without headers)
        message["X-Auto-Response-Suppress"] = "All"
        message["In-Reply-To"] = _msgid(rng, "emailsys.example")
    elif kind == "daemon" and rng.random() < 0.6:
        message["X-Failed-Recipients"] = "someone@example.org"
        message["Auto-Submitted"] = "auto-replied"
    elif kind == "plain" and rng.random() < 0.3:
        message["X-Auto-Response-Suppress"] = "All"  # Outlook puts it on ordinary mail: it must not decide anything
    elif kind == "plain" and rng.random() < 0.2:
        message["List-Id"] = "<team.lists.example.com>"  # a discussion list: a list, not a promotion


def _body(rng: random.Random, lang: str, core: str, values: dict, kind: str, variant: int, sent: datetime) -> str:
    first = values["me"]
    parts = []
    if kind not in ("dsn", "daemon", "daemon_plain", "bulk", "bulk_ics"):
        greeting = rng.choice(GREETINGS.get(lang, GREETINGS["en"])).format(first=first)
        if greeting:
            parts.append(greeting)
    parts.append(core)
    if variant in (1, 3):
        parts.append(rng.choice(FILLER))
    if kind not in ("dsn", "daemon", "daemon_plain", "auto"):
        parts.append(f"{rng.choice(CLOSINGS.get(lang, CLOSINGS['en']))}\n{values['name']}")
    if kind in ("reply", "reply_bare", "reply_intro") or (kind == "auto" and rng.random() < 0.3):
        quoted = rng.choice(
            [
                "Hi, following up on my last email about the proposal. Do you have time this week?",
                "Please find the details below and let me know what you think.",
                "Just checking in to see if you had a chance to look at this.",
            ]
        )
        author = f"{values['me']} <{values['me'].lower()}@emailsys.example>"
        parts.append(f"On {format_datetime(sent - timedelta(days=2))}, {author} wrote:\n> {quoted}")
    if kind in ("daemon", "daemon_plain") and rng.random() < 0.5:
        parts.append(
            "------ Original message ------\nSubject: Partnership proposal\n"
            "Hi, I wanted to reach out about a meeting next week."
        )
    if variant == 3 and kind == "bulk":
        parts.append(
            " ".join(
                rng.choice(
                    [
                        "Read our latest guide.",
                        "Follow us on social media.",
                        "Shop the collection.",
                        "Download the app.",
                        "Refer a friend and earn rewards.",
                    ]
                )
                for _ in range(12)
            )
        )
    return "\n\n".join(parts) + "\n"


def _html(text: str, kind: str) -> str:
    paragraphs = "".join(f"<p>{line}</p>" for line in text.split("\n\n"))
    footer = ""
    if kind.startswith("bulk"):
        footer = '<p style="font-size:10px"><a href="https://list.example.com/u/8e1f">Unsubscribe</a> | View online</p>'
    table = f"<table><tr><td>{paragraphs}{footer}</td></tr></table>"
    return f"<html><head><style>p{{margin:0}}</style></head><body>{table}</body></html>"


def _dsn(message: EmailMessage, text: str, values: dict, rng: random.Random) -> None:
    status = "4.4.1" if "451" in text else rng.choice(["5.1.1", "5.2.2", "5.1.10"])
    message.set_content(text)
    message.make_mixed()
    payload = message.get_payload()
    message.set_type("multipart/report")
    message.set_param("report-type", "delivery-status")
    dsn = email.message_from_string(
        "Content-Type: message/delivery-status\n\n"
        f"Reporting-MTA: dns; mx.{values['domain']}\nArrival-Date: Mon, 5 Jan 2026 10:00:00 +0000\n\n"
        f"Final-Recipient: rfc822; {values['rcpt']}\nAction: {'delayed' if status.startswith('4') else 'failed'}\n"
        f"Status: {status}\nDiagnostic-Code: smtp; 550 {status} user unknown\n",
        policy=email.policy.default,
    )
    headers = email.message_from_string(
        f"Content-Type: text/rfc822-headers\n\nFrom: someone@emailsys.example\nTo: {values['rcpt']}\n"
        f"Subject: {values['subject']}\n",
        policy=email.policy.default,
    )
    payload.extend([dsn, headers])


def _ics(message: EmailMessage, text: str, subject: str, kind: str, rng: random.Random) -> None:
    method = "PUBLISH" if kind == "bulk_ics" else "CANCEL" if "ancel" in subject else \
        "REPLY" if subject.startswith("Accepted") else "REQUEST"  # fmt: skip
    ics = (
        f"BEGIN:VCALENDAR\r\nPRODID:-//Example//Cal//EN\r\nVERSION:2.0\r\nMETHOD:{method}\r\nBEGIN:VEVENT\r\n"
        f"UID:{rng.randint(10**8, 10**9)}@example.com\r\nDTSTART:20260310T140000Z\r\nDTEND:20260310T150000Z\r\n"
        f"SUMMARY:{subject}\r\nORGANIZER:mailto:organizer@example.com\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    message.set_content(text)
    message.add_alternative(_html(text, kind), subtype="html")
    message.add_attachment(ics.encode(), maintype="text", subtype="calendar", filename="invite.ics",
                           params={"method": method})  # fmt: skip


def corpus_write(path: Path = CORPUS_PATH) -> int:
    rows = corpus_build()
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return len(rows)


if __name__ == "__main__":
    print(corpus_write(), "messages written to", CORPUS_PATH)
