"""Demo data: a running two-step campaign whose mail lands in the local SMTP capture (see /captured/)."""

import os

from django.db import transaction

from campaigns.models import Campaign, CampaignAccount, EmailTemplate, Lead, Recipient, SenderAccount, SequenceStep
from emailsys import clock

DEMO_CAMPAIGN = "Demo outreach"
FIRST = EmailTemplate(
    name="Demo: introduction",
    subject="Quick question, {{ first_name | default('there') }}",
    body_text=(
        "Hi {{ first_name | default('there') }},\n\n"
        "I noticed {{ company_name | default('your team') }} is growing. Would a 15-minute call next week help?\n"
    ),
    body_html=(
        "<p>Hi {{ first_name | default('there') }},</p>"
        "<p>I noticed {{ company_name | default('your team') }} is growing. Would a 15-minute call next week help?</p>"
    ),
)
FOLLOW_UP = EmailTemplate(
    name="Demo: follow-up",
    subject="-",  # a threaded step: "Re:" the previous subject (or, after a failed email, the first step's)
    body_text="Hi {{ first_name | default('there') }}, just bringing this back to the top of your inbox.\n",
)
LEADS = [
    ("Acme", [("ada@acme.test", "Ada", "Lovelace"), ("grace@acme.test", "Grace", "Hopper")]),
    ("Globex", [("hank@globex.test", "Hank", "Scorpio")]),
    ("Initech", [("peter@initech.test", "Peter", ""), ("info@initech.test", "", "")]),
    ("Umbrella", [("alice@umbrella.test", "Alice", "")]),
    ("", [("someone@example.test", "", "")]),
]


@transaction.atomic
def demo_load() -> str:
    if Campaign.objects.filter(name=DEMO_CAMPAIGN).exists():
        return f"campaign {DEMO_CAMPAIGN!r} exists"
    port = int(os.environ.get("SMTP_CAPTURE_PORT", "1025"))
    accounts = [
        SenderAccount.objects.get_or_create(
            email=email,
            defaults={
                "from_name": name,
                "first_name": name.split()[0],
                "last_name": name.split()[-1],
                "smtp_host": "127.0.0.1",
                "smtp_port": port,
                "security": SenderAccount.Security.NONE,
                "signature": f"{name}\nDemo Sales Ltd",
                "daily_limit": 20,
                "min_wait_seconds": 10,
                "jitter_seconds": 5,
            },
        )[0]
        for email, name in (("maria@demo-sales.test", "Maria Demo"), ("tom@demo-sales.test", "Tom Demo"))
    ]
    campaign = Campaign.objects.create(name=DEMO_CAMPAIGN, status=Campaign.Status.ACTIVE, batch_size=10)
    for account in accounts:
        CampaignAccount.objects.create(campaign=campaign, account=account)
    for order, template in enumerate((FIRST, FOLLOW_UP), start=1):
        saved, _ = EmailTemplate.objects.get_or_create(
            name=template.name,
            defaults={"subject": template.subject, "body_text": template.body_text, "body_html": template.body_html},
        )
        SequenceStep.objects.create(
            campaign=campaign, order=order, template=saved, delay_seconds=0 if order == 1 else 120, threaded=order > 1
        )
    now = clock.now()
    for index, (company, people) in enumerate(LEADS):
        lead = Lead.objects.create(campaign=campaign, external_id=f"demo-{index}", next_due_at=now)
        for position, (email, first, last) in enumerate(people):
            Recipient.objects.create(
                lead=lead,
                position=position,
                email=email,
                first_name=first,
                last_name=last,
                name=" ".join(filter(None, [first, last])),
                company_name=company,
            )
    return f"campaign {DEMO_CAMPAIGN!r}: {len(LEADS)} leads, 2 steps, 2 accounts sending to 127.0.0.1:{port}"
