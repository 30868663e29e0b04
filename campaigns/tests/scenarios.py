"""Whole campaigns for end-to-end tests and benchmarks: accounts pointed at a loopback SMTP server."""

import ast
import re
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace

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
from emailsys.testing import CapturedMail

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


# --- sequences judged by what the SMTP server received ----------------------------------------------------------

STEP_IN_TEXT = re.compile(r"^Step (\d+) of campaign \d+;", re.MULTILINE)


def mail_step(mail: CapturedMail) -> int:
    """The step a captured mail belongs to, read from its text ("Step N of campaign …", see BODY_TEXT): the
    subjects of threaded steps 2 and 3 are the same ("Re: …")."""
    found = STEP_IN_TEXT.search(mail.text)
    assert found, f"no step in the text of {mail.message_id}"
    return int(found.group(1))


def mails_by_recipient(mails: list[CapturedMail]) -> dict[str, list[CapturedMail]]:
    """Each recipient's mails in the order the server received them."""
    grouped: dict[str, list[CapturedMail]] = defaultdict(list)
    for mail in sorted(mails, key=lambda m: m.received_at):
        for address in mail.rcpt_tos:
            grouped[address.lower()].append(mail)
    return grouped


def lead_of_address(address: str) -> str:
    """The key that groups a lead's recipients: "r1.lead7@customer.test" (see `lead_add`) → "lead7"."""
    return address.lower().partition("@")[0].partition(".")[2]


def mails_described(mails: list[CapturedMail]) -> list[str]:
    """Each mail as "<recipient> step <n> from <sender>", for assertion messages."""
    return [f"{', '.join(mail.rcpt_tos)} step {mail_step(mail)} from {mail.mail_from}" for mail in mails]


def early_follow_ups(mails: list[CapturedMail], *, delay_seconds: float) -> list[str]:
    """Follow-ups received sooner than `delay_seconds` after the same recipient's previous step, described."""
    early = []
    for address, received in mails_by_recipient(mails).items():
        by_step = {mail_step(mail): mail for mail in received}
        for step, mail in sorted(by_step.items()):
            previous = by_step.get(step - 1)
            if previous is not None and mail.received_at - previous.received_at < delay_seconds:
                gap = mail.received_at - previous.received_at
                early.append(f"{address}: step {step} {gap:.1f}s after step {step - 1} (delay {delay_seconds}s)")
    return early


def repeated_steps(mails: list[CapturedMail]) -> list[tuple[str, int]]:
    """(recipient, step) pairs the server received more than once."""
    counts = Counter((address.lower(), mail_step(mail)) for mail in mails for address in mail.rcpt_tos)
    return [pair for pair, count in counts.items() if count > 1]


@dataclass
class TaskRun:
    """One Celery task message as the event stream saw it: published, received (by each worker it reached), run."""

    uuid: str
    name: str = ""
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    sent_at: float | None = None
    received_by: list[str] = field(default_factory=list)
    started: list[tuple[str, float]] = field(default_factory=list)  # (worker, time) of each run
    finished: list[tuple[str, float]] = field(default_factory=list)
    results: list[str] = field(default_factory=list)  # the repr of each run's return value

    @property
    def queue_wait(self) -> float | None:
        """Seconds from publishing to the first run: how long the message waited in the queue."""
        if self.sent_at is None or not self.started:
            return None
        return self.started[0][1] - self.sent_at


class TaskEvents:
    """Celery's task events (what Flower shows), collected in a thread: what was published with which arguments,
    which workers received it, when it ran. A message Redis redelivers is received twice under one uuid."""

    def __init__(self) -> None:
        from celery import Celery
        from django.conf import settings

        self.app = Celery("events", broker=settings.CELERY_BROKER_URL, set_as_current=False)
        self.runs: dict[str, TaskRun] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.app.connection_for_read() as connection:
            receiver = self.app.events.Receiver(connection, handlers={"*": self._on_event})
            self._ready.set()
            while not self._stop.is_set():
                try:
                    receiver.capture(limit=None, timeout=0.5, wakeup=False)
                except TimeoutError:
                    continue

    def _on_event(self, event: dict) -> None:
        kind, uuid = event.get("type", ""), event.get("uuid")
        if not kind.startswith("task-") or not uuid:
            return
        with self._lock:
            run = self.runs.setdefault(uuid, TaskRun(uuid))
            if event.get("name"):
                run.name = event["name"]
            if kind in ("task-sent", "task-received") and event.get("args") is not None:
                run.args, run.kwargs = _literal(event["args"], ()), _literal(event.get("kwargs"), {})
            if kind == "task-sent":
                run.sent_at = event["timestamp"]
            elif kind == "task-received":
                run.received_by.append(event["hostname"])
            elif kind == "task-started":
                run.started.append((event["hostname"], event["timestamp"]))
            elif kind in ("task-succeeded", "task-failed"):
                run.finished.append((event["hostname"], event["timestamp"]))
                run.results.append(str(event.get("result", event.get("exception", ""))))

    def of(self, name: str) -> list[TaskRun]:
        """Copies of the runs of task `name`, in the order they were published."""
        with self._lock:
            runs = [replace(run, received_by=list(run.received_by), started=list(run.started),
                            finished=list(run.finished), results=list(run.results))
                    for run in self.runs.values() if run.name == name]  # fmt: skip
        return sorted(runs, key=lambda run: run.sent_at or float("inf"))

    def __enter__(self) -> "TaskEvents":
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def _literal(text: str | None, default):
    """Events carry the arguments as their repr; ids, None and strings read back exactly."""
    try:
        return ast.literal_eval(text) if text else default
    except (ValueError, SyntaxError):
        return default


def dispatch_tick_every_ms(*, milliseconds: int) -> None:
    """Beat's dispatcher tick faster than once a second, for a test whose minutes should go into sending rather
    than waiting for the next scan. Saved through the model, so a running beat notices the change."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every = {"every": milliseconds * 1000, "period": IntervalSchedule.MICROSECONDS}
    schedule = IntervalSchedule.objects.get_or_create(**every)[0]
    tick = {"task": "campaigns.dispatch_due", "interval": schedule, "queue": "default"}
    PeriodicTask.objects.update_or_create(name="campaigns: dispatch", defaults=tick)
