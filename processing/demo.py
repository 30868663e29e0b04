"""Demo data for inbound mail: a few sample messages put into the simulator's demo mailbox at `demo_setup`, so the
dashboard and /emails show classified mail as soon as the workers run. Autoconnect connects the mailbox (our
Mailbox, its webhook subscription, a backfill sync the inbound worker runs once the web server answers). Safe to
run again: a demo mailbox that already has messages gets none."""

from email.message import EmailMessage
from email.utils import make_msgid
from typing import TextIO

from django.conf import settings

DEMO_MAILBOX = "demo@example.com"


def _meeting_invite(to: str) -> str:
    message = EmailMessage()
    message["From"] = "Carol <carol@example.org>"
    message["To"] = to
    message["Subject"] = "Invitation: project sync, Thursday 10:00"
    message["Message-ID"] = make_msgid(domain="example.org")
    message.set_content("You are invited to the project sync on Thursday at 10:00 (30 min).")
    message.add_attachment(
        "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nSUMMARY:Project sync\r\n"
        "DTSTART:20270107T100000Z\r\nDTEND:20270107T103000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        subtype="calendar",
        params={"method": "REQUEST"},
    )
    return message.as_string()


def sample_emails(to: str) -> list[dict]:
    """One message of each kind the classifier knows well, as send_email payloads (also inbound_connect --test's)."""
    return [
        {"to": to, "raw": _meeting_invite(to)},
        {
            "from": "Deals <news@shop.example>",
            "to": to,
            "subject": "48 hours only: 30% off everything",
            "body": "Our biggest sale of the year ends Sunday. Shop now and save 30% on every order.",
            "headers": {"List-Unsubscribe": "<https://shop.example/u/1>", "Precedence": "bulk"},
        },
        {
            "from": "Dan <dan@example.net>",
            "to": to,
            "subject": "Introduction: Dan, meet Erin",
            "body": "Hi both, I'd like to introduce you to each other. Erin runs growth at Acme; Dan is building "
            "the new analytics product. I think you two should talk.",
        },
        {
            "from": "Frank <frank@example.com>",
            "to": to,
            "subject": "Re: our call",
            "body": "Thanks, that works for me.",
            "headers": {"In-Reply-To": "<call-1@example.com>", "References": "<call-1@example.com>"},
        },
    ]


def demo_inbound_load(*, stdout: TextIO) -> None:
    if not (settings.INBOUND_SIMULATOR_ENABLED and settings.INBOUND_SIMULATOR_AUTOCONNECT):
        return
    from simulator.models import SimMessage
    from simulator.services import email_send

    if SimMessage.objects.filter(mailbox__address=DEMO_MAILBOX).exists():
        stdout.write(f"Inbound demo mailbox {DEMO_MAILBOX} already has mail.\n")
        return
    for payload in sample_emails(DEMO_MAILBOX):
        email_send(payload=payload)
    stdout.write(f"Sent {len(sample_emails(DEMO_MAILBOX))} sample emails to {DEMO_MAILBOX} (the simulator).\n")


def demo_load() -> str:
    """load_demo_data's hook (every app's demo module has one): the same sample mail, once."""
    import io

    out = io.StringIO()
    demo_inbound_load(stdout=out)
    return out.getvalue().strip() or "inbound: simulator off, no sample mail"
