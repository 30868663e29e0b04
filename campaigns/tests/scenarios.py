"""Whole campaigns for end-to-end tests and benchmarks: accounts pointed at a loopback SMTP server."""

from dataclasses import dataclass

from campaigns.models import (
    Campaign,
    CampaignAccount,
    EmailTemplate,
    Lead,
    Recipient,
    SenderAccount,
    SendRecord,
    SequenceStep,
)
from campaigns.services.batches import lead_batch_send
from campaigns.services.dispatch import dispatch_due
from campaigns.services.smtp import SmtpSessions
from emailsys import clock

SUBJECT = "Hello {{ first_name | default('there') }} from {{ sender_name }}"
BODY_TEXT = (
    "Hi {{ first_name | default('there') }},\n\n"
    "We help {{ company_name | default('your company') }} ({{ website | default('https://example.com') }}).\n"
    "Step {{ step_order }} of campaign {{ campaign_id }}; your plan: {{ plan | default('none') }}.\n"
)
BODY_HTML = "<p>Hi {{ first_name | default('there') }},</p><p>We help {{ company_name | default('your company') }}.</p>"


@dataclass
class Scenario:
    campaign: Campaign
    accounts: list[SenderAccount]
    leads: list[Lead]
    steps: list[SequenceStep]


def campaign_scenario(
    *,
    smtp_port: int,
    accounts: int = 3,
    daily_limit: int = 5,
    min_wait_seconds: int = 0,
    leads: int = 20,
    recipients_per_lead: int = 2,
    steps: int = 2,
    step_delay_seconds: int = 0,
    batch_size: int = 20,
    threaded_follow_up: bool = False,
    name: str = "Scenario",
) -> Scenario:
    campaign = Campaign.objects.create(name=name, status=Campaign.Status.ACTIVE, batch_size=batch_size)
    sender_accounts = []
    for index in range(accounts):
        account = SenderAccount.objects.create(
            email=f"sender{index}@{name.lower().replace(' ', '-')}.test",
            from_name=f"Sender {index}",
            first_name="Sender",
            last_name=str(index),
            smtp_host="127.0.0.1",
            smtp_port=smtp_port,
            security=SenderAccount.Security.NONE,
            signature=f"-- \nSender {index}\nExample Ltd",
            daily_limit=daily_limit,
            min_wait_seconds=min_wait_seconds,
        )
        CampaignAccount.objects.create(campaign=campaign, account=account)
        sender_accounts.append(account)
    step_rows = []
    for order in range(1, steps + 1):
        template = EmailTemplate.objects.create(
            name=f"{name} step {order}", subject=SUBJECT, body_text=BODY_TEXT, body_html=BODY_HTML
        )
        step_rows.append(
            SequenceStep.objects.create(
                campaign=campaign,
                order=order,
                template=template,
                delay_seconds=0 if order == 1 else step_delay_seconds,
                threaded=threaded_follow_up and order > 1,
            )
        )
    now = clock.now()
    lead_rows = [
        lead_add(campaign=campaign, index=index, recipients=recipients_per_lead, next_due_at=now)
        for index in range(leads)
    ]
    return Scenario(campaign, sender_accounts, lead_rows, step_rows)


def lead_add(*, campaign: Campaign, index: int, recipients: int, next_due_at) -> Lead:
    """Lead `index` with recipients r<position>.lead<index>@customer.test; some have no first name or company,
    so the templates' defaults show."""
    lead = Lead.objects.create(
        campaign=campaign,
        external_id=f"L{index}",
        next_due_at=next_due_at,
        custom_fields={"plan": "gold"} if index % 2 else {},
    )
    for position in range(recipients):
        has_name = (index + position) % 3 != 0
        Recipient.objects.create(
            lead=lead,
            position=position,
            email=f"r{position}.lead{index}@customer.test",
            first_name=f"First{index}x{position}" if has_name else "",
            name=f"First{index}x{position} Last" if has_name else "",
            company_name=f"Company {index}" if index % 4 else "",
        )
    return lead


def expected_text(*, recipient: Recipient, account: SenderAccount, campaign: Campaign, step_order: int) -> str:
    """The text part a recipient must receive, written out by hand (not by our renderer)."""
    lead = recipient.lead
    first = recipient.first_name or "there"
    company = recipient.company_name or "your company"
    plan = lead.custom_fields.get("plan", "none")
    return (
        f"Hi {first},\n\nWe help {company} (https://example.com).\n"
        f"Step {step_order} of campaign {campaign.id}; your plan: {plan}.\n\n"
        f"{account.signature}\n\nUnsubscribe: http://127.0.0.1:8000/u/{recipient.unsubscribe_token}/\n"
    )


def expected_subject(*, recipient: Recipient, account: SenderAccount) -> str:
    return f"Hello {recipient.first_name or 'there'} from {account.from_name}"


def assert_mail_is_its_send_record(mail, campaign: Campaign) -> SendRecord:
    """The captured message is byte for byte the stored one, and its parts are the hand-written expectation."""
    from email import policy
    from email.parser import BytesParser

    message = BytesParser(policy=policy.default).parsebytes(mail.content)
    records = SendRecord.objects.select_related("recipient__lead", "account", "step")
    record = records.get(message_id=message["Message-ID"])
    assert (mail.rcpt_tos, mail.mail_from) == ((record.recipient.email,), record.account.email)
    assert mail.content.replace(b"\r\n", b"\n") == record.message.encode().replace(b"\r\n", b"\n")
    assert message["Subject"] == expected_subject(recipient=record.recipient, account=record.account)
    text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text == expected_text(
        recipient=record.recipient, account=record.account, campaign=campaign, step_order=record.step.order
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Unsubscribe"] == f"<http://127.0.0.1:8000/u/{record.recipient.unsubscribe_token}/>"
    to = message["To"].addresses[0]
    assert (to.addr_spec, to.display_name) == (record.recipient.email, record.recipient.name)
    assert record.state == SendRecord.State.SENT
    return record


def run_until_idle(max_rounds: int = 100) -> None:
    """Dispatch and send in this process until no lead is due (the limits or the sequence end stop it)."""
    for _ in range(max_rounds):
        result = dispatch_due(now=clock.now())
        if not result.batches:
            return
        sessions = SmtpSessions()
        try:
            for batch in result.batches:
                lead_batch_send(lead_ids=batch.lead_ids, sessions=sessions, claim=batch.claim)
        finally:
            sessions.close()
    raise AssertionError("still dispatching after max_rounds")


def dispatch_tick_every(*, seconds: int) -> None:
    """Beat's dispatcher tick at this interval. Transactional tests flush every table, migration-made rows
    included, so the periodic task is (re)created here rather than assumed."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    schedule = IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)[0]
    tick = {"task": "campaigns.dispatch_due", "interval": schedule, "queue": "default"}
    PeriodicTask.objects.update_or_create(name="campaigns: dispatch", defaults=tick)
