"""A whole three-step campaign under trouble, with real processes (beat, a default worker, sending workers) and an
SMTP server on loopback that answers DATA a second late, defers every 7th RCPT and bounces one address. One sending
thread first, so the backlog outlasts the 20 s send lease and the dispatcher re-claims leads whose batches still
wait; once a batch has waited longer than the lease, a second sending worker joins and the accounts set the
pace. Judged by what the server received (times, senders, subjects, threading headers) and what it refused, not by
the database: no step before its delay, every email of a lead from its first sender and threaded on the
recipient's previous one, nothing after a reply, nothing after a bounce, the lead whose template cannot render
fails alone, limits and gaps held, nothing twice."""

import contextlib
import socket
import statistics
import time
from collections import Counter, defaultdict

import pytest

from campaigns.models import AccountDailyUsage, EmailTemplate, Lead, Recipient, SendRecord
from campaigns.services.recipients import recipient_mark_replied
from campaigns.tests.scenarios import (
    BODY_HTML,
    TaskEvents,
    TaskRun,
    campaign_scenario,
    dispatch_tick_every_ms,
    early_follow_ups,
    lead_of_address,
    mail_step,
    mails_by_recipient,
    repeated_steps,
)
from campaigns.tests.test_campaign_processes import start_engine, wait_for_quiet
from emailsys.testing import (
    RecordingSmtpServer,
    every_nth_rcpt_deferred,
    process_env,
    unique_token,
    wait_until,
    worker_argv,
)

pytestmark = pytest.mark.django_db(transaction=True)

LEADS, STEPS, DELAY = 30, 3, 30  # 30 leads × 2 recipients × 3 steps; steps 2 and 3 threaded, 30 s after the last
LEASE, MIN_WAIT, DAILY_LIMIT = 20, 1, 120
BAD_LEAD, REPLIED_LEAD = 3, 5  # its template divides by zero; one of its recipients replies after step 1
BOUNCED = "r0.lead7@customer.test"
# 451 on every 7th RCPT, each lead at most once and only in the first 100 RCPTs (the first two minutes): every
# retry waits a minute (the core's backoff), and the test must end in about four.
DEFERRAL = every_nth_rcpt_deferred(7, once_per=lead_of_address, until=100)


def addresses(lead_index: int) -> tuple[str, str]:
    return (f"r0.lead{lead_index}@customer.test", f"r1.lead{lead_index}@customer.test")


def expected_steps() -> dict[str, list[int]]:
    """What each recipient must receive, by step."""
    expected = {}
    for index in range(LEADS):
        for address in addresses(index):
            if index == BAD_LEAD or address == BOUNCED:
                expected[address] = []
            elif index == REPLIED_LEAD:
                expected[address] = [1]
            else:
                expected[address] = list(range(1, STEPS + 1))
    return expected


def scenario_timeline(mails, rcpts, queue_waits) -> str:
    """Mails received per 20 s and the longest queue wait: shown with the output of a failing run."""
    start = min((rcpt.at for rcpt in rcpts), default=0)
    per_slot = Counter(int((mail.received_at - start) // 20) * 20 for mail in mails)
    slots = ", ".join(f"{slot}s: {count}" for slot, count in sorted(per_slot.items()))
    longest = max(queue_waits, default=0)
    gaps = []
    for sender in {mail.mail_from for mail in mails}:
        times = sorted(mail.received_at for mail in mails if mail.mail_from == sender)
        gaps.append(f"{sender} {statistics.median(b - a for a, b in zip(times, times[1:], strict=False)):.2f}s")
    return (
        f"{len(mails)} mails, {len(rcpts)} RCPTs; per 20 s from the first RCPT: {slots}; longest queue wait "
        f"{longest:.1f}s; median gap per sender: {', '.join(gaps)}"
    )


def longest_queue_wait(events: TaskEvents) -> float:
    return max((run.queue_wait or 0 for run in events.of("campaigns.send_batch")), default=0)


def stale(batches: list[TaskRun]) -> list[TaskRun]:
    """The batch copies that found their claim taken over (the worker's outcome counts say so)."""
    return [run for run in batches if any("stale claim" in result for result in run.results)]


def received_steps(mails) -> dict[str, list[int]]:
    return {address: [mail_step(mail) for mail in got] for address, got in mails_by_recipient(mails).items()}


@pytest.mark.timeout(360)
def test_thirty_leads_three_steps_under_deferrals_bounces_a_reply_a_bad_template_and_a_backlog(
    processes, tmp_path
) -> None:
    with (
        RecordingSmtpServer(data_delay=1.0, bounce_addresses={BOUNCED}, rcpt_fault=DEFERRAL) as smtp,
        TaskEvents() as events,
    ):
        scenario = campaign_scenario(smtp_port=smtp.port, accounts=2, daily_limit=DAILY_LIMIT,
                                     min_wait_seconds=MIN_WAIT, leads=LEADS, recipients_per_lead=2, steps=STEPS,
                                     step_delay_seconds=DELAY, batch_size=1, threaded_follow_up=True,
                                     name="Sequence scenario")  # fmt: skip
        EmailTemplate.objects.filter(steps__campaign=scenario.campaign).update(
            body_html=BODY_HTML + "<p>Your share: {{ 100 // divisor }}</p>"
        )
        for lead in scenario.leads:
            lead.custom_fields = {**lead.custom_fields, "divisor": 0 if lead.external_id == f"L{BAD_LEAD}" else 4}
            lead.save(update_fields=["custom_fields"])

        env = {"CAMPAIGN_SEND_LEASE_SECONDS": str(LEASE), "CAMPAIGN_SMTP_TIMEOUT": "5"}
        node = f"sending-{unique_token()}@{socket.gethostname()}"
        processes("worker-sending", worker_argv("sending", node_name=node, concurrency=1), env=process_env(**env))
        start_engine(processes, tmp_path, sending_workers=0, **env)
        # Scans four times a second: a lead waiting for its sender's min wait goes as soon as the account opens.
        dispatch_tick_every_ms(milliseconds=250)

        # One deadline for the waits below (alone it ends in ~210 s; beside the browser tests it needs more); on a
        # timeout the assertions after them say what went wrong.
        deadline = time.monotonic() + 270

        def left(at_most: float) -> float:
            return max(1.0, min(at_most, deadline - time.monotonic()))

        replied_addresses = addresses(REPLIED_LEAD)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: set(replied_addresses) <= set(mails_by_recipient(smtp.snapshot())), timeout=left(150),
                       interval=0.2, what=f"step 1 to both recipients of lead {REPLIED_LEAD}")  # fmt: skip
        replied = Recipient.objects.get(email=replied_addresses[0])
        replied_at = time.time()
        assert recipient_mark_replied(recipient=replied, source="acceptance test")

        # The backlog outlasted the lease: a batch waited in the queue longer than its claim lasts, so a later scan
        # has re-claimed its leads. Now a second sending worker joins; the accounts' gaps set the pace from here on.
        with contextlib.suppress(TimeoutError):  # no backlog: asserted last, after what was received
            wait_until(lambda: longest_queue_wait(events) > LEASE, timeout=left(90), interval=0.5,
                       what="a batch queued for longer than the send lease")  # fmt: skip
        node = f"sending-more-{unique_token()}@{socket.gethostname()}"
        processes("worker-sending-more", worker_argv("sending", node_name=node, concurrency=2), env=process_env(**env))

        expected = expected_steps()

        def done_or_wrong():
            mails = smtp.snapshot()
            wrong = early_follow_ups(mails, delay_seconds=DELAY) or repeated_steps(mails)
            got = received_steps(mails)
            return wrong or all(got.get(address, []) == steps for address, steps in expected.items())

        with contextlib.suppress(TimeoutError):
            wait_until(done_or_wrong, timeout=left(270), interval=0.5, what="every step to every mailable recipient")
        wait_for_quiet(ticks=12)
        mails = smtp.snapshot()
        rcpts = smtp.rcpt_snapshot()
        batches = events.of("campaigns.send_batch")
        queue_waits = [run.queue_wait for run in batches if run.queue_wait is not None]
        stale_copies = stale(batches)
        print(scenario_timeline(mails, rcpts, queue_waits), f"; {len(stale_copies)} of {len(batches)} batches stale")

    # Nothing twice, no step before its delay (from the same recipient's previous step, as received).
    assert not repeated_steps(mails), f"received twice: {repeated_steps(mails)}"
    assert not early_follow_ups(mails, delay_seconds=DELAY), early_follow_ups(mails, delay_seconds=DELAY)

    # One sender per lead: the account that sent the lead's first email sends every later one, to both recipients.
    by_lead = defaultdict(list)
    for mail in sorted(mails, key=lambda m: m.received_at):
        by_lead[lead_of_address(mail.rcpt_tos[0])].append(mail)
    for lead_key, lead_mails in by_lead.items():
        first_sender = lead_mails[0].mail_from
        others = {mail.mail_from for mail in lead_mails} - {first_sender}
        assert not others, f"{lead_key}: first sent by {first_sender}, later also by {others}"

    # Threaded on the recipient's previous email: In-Reply-To, References and "Re: " + the step-1 subject.
    for address, got in mails_by_recipient(mails).items():
        for previous, mail in zip(got, got[1:], strict=False):
            assert mail.in_reply_to == previous.message_id, f"{address} step {mail_step(mail)} not threaded"
            assert mail.references[-1:] == (previous.message_id,)
            assert mail.subject == f"Re: {got[0].subject}"

    # The reply stopped the whole lead: nothing to either of its recipients after it, not even a RCPT.
    after_reply = [rcpt for rcpt in rcpts if rcpt.address.lower() in replied_addresses and rcpt.at > replied_at]
    assert not after_reply, f"lead {REPLIED_LEAD} was mailed after the reply: {after_reply}"
    assert Lead.objects.get(id=replied.lead_id).state == Lead.State.STOPPED

    # The bounced address was asked once (550), and never again; its lead's other recipient got every step.
    bounced = [rcpt for rcpt in rcpts if rcpt.address.lower() == BOUNCED]
    assert [rcpt.reply[:3] for rcpt in bounced] == ["550"], bounced

    # The lead whose template divides by zero: no RCPT at all, each record failed with the reason; no one else.
    bad_addresses = addresses(BAD_LEAD)
    assert not [rcpt for rcpt in rcpts if rcpt.address.lower() in bad_addresses]
    bad_records = SendRecord.objects.filter(campaign=scenario.campaign, recipient__email__in=bad_addresses)
    assert bad_records.count() >= 2
    for record in bad_records:
        assert record.state == SendRecord.State.FAILED
        assert record.last_error.startswith("template error:") and "ZeroDivisionError" in record.last_error
    failed_elsewhere = SendRecord.objects.filter(campaign=scenario.campaign, state=SendRecord.State.FAILED).exclude(
        recipient__email__in=bad_addresses
    )
    assert not failed_elsewhere.exists()
    assert received_steps(mails) == {address: steps for address, steps in expected.items() if steps}

    # Per account: gaps of at least the min wait between sends, the daily limit held, and counted exactly.
    per_account = defaultdict(list)
    for mail in mails:
        per_account[mail.mail_from].append(mail.received_at)
    assert set(per_account) == {account.email for account in scenario.accounts}
    for account in scenario.accounts:
        times = sorted(per_account[account.email])
        gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
        assert min(gaps) >= MIN_WAIT, f"{account.email}: two sends {min(gaps):.2f}s apart"
        assert len(times) <= DAILY_LIMIT
        reserved = sum(AccountDailyUsage.objects.filter(account=account).values_list("reserved", flat=True))
        assert reserved == len(times), f"{account.email}: {reserved} counted, {len(times)} received"

    # The trouble really happened: deferrals (retried, first steps and follow-ups alike) and a backlog that
    # outlasted the send lease, so the dispatcher re-claimed leads whose batches were still queued.
    deferrals = [rcpt for rcpt in rcpts if rcpt.reply.startswith("451")]
    deferred = Counter(rcpt.address.lower() for rcpt in deferrals)
    assert len(deferred) >= 5, deferred
    assert all(address in mails_by_recipient(mails) for address in deferred if expected[address])
    first_received = {address: got[0].received_at for address, got in mails_by_recipient(mails).items()}
    assert any(rcpt.at > first_received.get(rcpt.address.lower(), float("inf")) for rcpt in deferrals), (
        "no follow-up was deferred"
    )
    assert max(queue_waits) > LEASE, f"the longest queue wait was {max(queue_waits):.1f}s: no backlog past the lease"
    assert stale_copies, "no batch found its claim taken over: the dispatcher never re-claimed a queued lead"
