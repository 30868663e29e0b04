"""Demo data for `make demo`: an event, contacts in English and French, a segment and a work order ready to
start, sending through the local SMTP capture (SMTP_CAPTURE_PORT, default 1025). Idempotent.

The work order is not auto-approved: a demo shows the review gate, stopping after Test (test email in the
capture, dry-run list viewable) until someone presses Approve."""

import os
import unicodedata
from datetime import timedelta

from django.db import transaction

from campaigns.models import EmailTemplate, SenderAccount
from emailsys import clock
from workorders.models import Contact, Event, Segment, WorkOrder
from workorders.services.lifecycle import workorder_create

DEMO_EVENT_CODE = "DEMO2026"
DEMO_TEMPLATE = "Event invitation (demo)"
TEMPLATE_TEXT = """{% if language == "fr" %}Bonjour {{ name }},

Vous êtes invité·e à {{ event_name }}.
{% if in_person %}L'événement a lieu sur place.{% else %}Zoom : {{ zoom_id }}{% endif %}
Inscription : {{ registration_link }}
{% else %}Hello {{ name }},

You are invited to {{ event_name }}.
{% if in_person %}The event is in person.{% else %}Zoom: {{ zoom_id }}{% endif %}
Register: {{ registration_link }}
{% endif %}"""


def ascii_name(text: str) -> str:
    """ "Amélie" → "Amelie": an address's local part must be ASCII unless the server offers SMTPUTF8."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


@transaction.atomic
def demo_workorder_create() -> WorkOrder:
    """The demo work order (the existing one if there is one): 12 contacts, 6 per language, all registered."""
    existing = WorkOrder.objects.filter(event__code=DEMO_EVENT_CODE).first()
    if existing is not None:
        return existing
    port = int(os.environ.get("SMTP_CAPTURE_PORT", "1025"))
    account, _ = SenderAccount.objects.get_or_create(
        email="events@demo-events.test",
        defaults={"from_name": "Demo Events", "smtp_host": "127.0.0.1", "smtp_port": port,
                  "security": SenderAccount.Security.NONE, "daily_limit": 500, "min_wait_seconds": 0},
    )  # fmt: skip
    template, _ = EmailTemplate.objects.get_or_create(
        name=DEMO_TEMPLATE, defaults={"subject": "You are invited: {{ event_name }}", "body_text": TEMPLATE_TEXT}
    )
    event, _ = Event.objects.get_or_create(
        code=DEMO_EVENT_CODE, sub_event="weekend1",
        defaults={"name": "Demo Retreat 2026", "attendance": Event.Attendance.VIRTUAL, "zoom_id": "123 456 7890",
                  "registration_link": "https://events.example.org/demo2026",
                  "starts_at": clock.now() + timedelta(days=30)},
    )  # fmt: skip
    people = [("en", name) for name in ("Alice Adams", "Bob Brown", "Carol Clark", "Dan Davis", "Eve Evans",
                                        "Frank Ford")]  # fmt: skip
    people += [("fr", name) for name in ("Amélie Arnaud", "Benoît Bernard", "Chloé Caron", "Denis Dubois",
                                         "Élodie Faure", "Gilles Girard")]  # fmt: skip
    for language, name in people:
        Contact.objects.get_or_create(
            email=f"{ascii_name(name.split()[0]).lower()}@demo-contacts.test",
            defaults={"name": name, "language": language, "attributes": {"registered": [DEMO_EVENT_CODE]}},
        )
    segment, _ = Segment.objects.get_or_create(
        slug="demo2026-registered",
        defaults={"name": "Registered for DEMO2026",
                  "rule": {"attribute_contains": {"path": "registered", "value": DEMO_EVENT_CODE}}},
    )  # fmt: skip
    return workorder_create(
        event=event, stage="invitation", audience=segment, account=account, template=template,
        subjects={"en": "", "fr": "Vous êtes invité·e : {{ event_name }}"}, from_name="Demo Events Team",
        reply_to="events@demo-events.test", testers=["tester@demo-events.test"], burst_size=5, burst_pause_seconds=2,
    )  # fmt: skip


def demo_load() -> str:
    """`load_demo_data`'s entry point."""
    work_order = demo_workorder_create()
    return (
        f"work order {work_order.id} for event {DEMO_EVENT_CODE} ({work_order.status}): start it in the admin; "
        "it stops after Test for your Approve"
    )
