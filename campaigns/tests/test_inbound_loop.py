"""The real loop on loopback: a three-step campaign sends from two accounts through real Celery workers to an SMTP
server; after step 1 the recipients answer into the accounts' mailboxes (a reply, an unsubscribe request, an
out-of-office answer, hard bounces of Postfix, Exim, Exchange and Gmail, a soft bounce), built around the
Message-IDs and X-Emailsys-Send headers the SMTP server received. The mail enters the inbound pipeline through
one seam, `deliver_inbound`: each account's Dovecot inbox on loopback, read by the IMAP poll. Classification runs
in a real inbound worker. Judged from the SMTP
server's log: no replied, bounced or unsubscribed recipient gets a later step, the out-of-office and soft-bounced
ones do, and a second campaign started afterwards is refused the suppressed addresses."""

import contextlib
import time
from collections.abc import Callable

import pytest

from campaigns.models import Activity, Lead, Recipient, SenderAccount, SendRecord
from campaigns.services.templating import SEND_REFERENCE_HEADER
from campaigns.tests.inbound_fixtures import fixture_render
from campaigns.tests.scenarios import campaign_scenario, mail_step, mails_by_recipient
from campaigns.tests.test_campaign_processes import start_engine, wait_for_quiet
from emailsys.testing import RecordingSmtpServer, unique_token, wait_until
from processing.models import InboundEmail
from processing.services.imap import imap_account_create, imap_poll
from processing.tests.test_inbound_acceptance import Stack, all_classified

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(360)]

LEADS, STEPS, DELAY = 10, 3, 30  # one recipient per lead, r0.lead<i>@customer.test; steps 2 and 3 threaded
# What each lead's recipient sends back after step 1 (the other leads stay silent).
ANSWERS = {
    0: "reply_quoted.eml",  # quotes our footer with its unsubscribe link: a reply, not an unsubscribe
    1: "postfix_hard.eml",
    2: "exim_hard.eml",
    3: "exchange_hard.eml",
    4: "gmail_hard.eml",
    5: "gmail_soft.eml",
    6: "ooo_de.eml",
    7: "unsubscribe_fr.eml",
}
STOPPED = {0, 1, 2, 3, 4, 7}
SUPPRESSED = {1, 2, 3, 4, 7}


def address(index: int) -> str:
    return f"r0.lead{index}@customer.test"


def dovecot_seam(imap_server, accounts: list[SenderAccount]) -> Callable[[str, bytes], str]:
    """Each account's own Dovecot user and IMAP settings; a message is delivered into its INBOX and the mailbox
    polled (as beat or IDLE would have it). Returns the stored message's provider id (UIDVALIDITY:UID)."""
    users = {}
    for account in accounts:
        name, password = f"loop-{unique_token()}", f"pw-{unique_token()}"
        imap_server.add_user(name, password)
        imap = imap_account_create(sender_account=account, host=imap_server.host, port=imap_server.port,
                                   security="none", username=name, password=password)  # fmt: skip
        users[account.email] = (name, imap.mailbox_id)

    def deliver_inbound(account_email: str, raw: bytes) -> str:
        name, mailbox_id = users[account_email]
        before = set(InboundEmail.objects.filter(mailbox_id=mailbox_id).values_list("email_id", flat=True))
        imap_server.deliver(name, raw)
        assert imap_poll(mailbox_id).stored == 1
        (new,) = set(InboundEmail.objects.filter(mailbox_id=mailbox_id).values_list("email_id", flat=True)) - before
        return new

    return deliver_inbound


def test_replies_bounces_auto_replies_and_unsubscribes_steer_a_running_campaign(
    processes, settings, tmp_path, imap_server
) -> None:
    stack = Stack(processes, settings)
    # The bounces are about recipients here; the account pause has its own test (4 bounces of 10 sends would
    # pause both accounts at the default minimum of 20 sends only later, but never in the middle of this proof).
    stack.worker("inbound-loop", ACCOUNT_BOUNCE_PAUSE_MIN_SENDS="1000")
    with RecordingSmtpServer() as smtp:
        first = campaign_scenario(smtp_port=smtp.port, accounts=2, daily_limit=100, leads=LEADS, recipients_per_lead=1,
                                  steps=STEPS, step_delay_seconds=DELAY, batch_size=5, threaded_follow_up=True,
                                  name="Inbound loop")  # fmt: skip
        first_senders = {account.email for account in first.accounts}
        deliver_inbound = dovecot_seam(imap_server, first.accounts)
        stack.workers_ready()
        start_engine(processes, tmp_path)

        wait_until(lambda: all(address(i) in mails_by_recipient(smtp.snapshot()) for i in range(LEADS)),
                   timeout=90, interval=0.2, what="step 1 to every recipient")  # fmt: skip
        step_one = {recipient: mails[0] for recipient, mails in mails_by_recipient(smtp.snapshot()).items()}
        delivered = []
        for index, fixture in ANSWERS.items():
            mail = step_one[address(index)]
            reference = mail.parsed[SEND_REFERENCE_HEADER]
            assert reference and mail.message_id in f"<{reference.partition('.')[2]}>", "our send header is missing"
            raw = fixture_render(fixture, account=mail.mail_from, recipient=address(index),
                                 message_id=mail.message_id, send_reference=str(reference))  # fmt: skip
            delivered.append(deliver_inbound(mail.mail_from, raw))
        delivered_at = time.time()
        wait_until(all_classified(delivered), timeout=DELAY - 5, interval=0.2, what="every answer processed")
        processed_at = time.time()

        # A second campaign, started once the answers are in, writes to the same ten addresses.
        second = campaign_scenario(smtp_port=smtp.port, accounts=1, daily_limit=100, leads=LEADS,
                                   recipients_per_lead=1, steps=1, name="Second campaign")  # fmt: skip
        second_senders = {account.email for account in second.accounts}
        expected_first = {address(i): [1] if i in STOPPED else [1, 2, 3] for i in range(LEADS)}
        expected_second = {address(i) for i in range(LEADS) if i not in SUPPRESSED}

        def steps_from(senders: set[str]) -> dict[str, list[int]]:
            mails = [mail for mail in smtp.snapshot() if mail.mail_from in senders]
            return {
                recipient: [mail_step(mail) for mail in got] for recipient, got in mails_by_recipient(mails).items()
            }

        def finished() -> bool:
            got = steps_from(first_senders)
            return all(len(got.get(a, [])) >= len(steps) for a, steps in expected_first.items()) and (
                expected_second <= set(steps_from(second_senders))
            )

        with contextlib.suppress(TimeoutError):  # the assertions below say what is missing
            wait_until(finished, timeout=3 * DELAY + 60, interval=0.5, what="every step to every mailable recipient")
        wait_for_quiet(ticks=5)
        received_first, received_second = steps_from(first_senders), steps_from(second_senders)
        rcpts = smtp.rcpt_snapshot()

    print(f"answers delivered and processed in {processed_at - delivered_at:.1f} s")
    # From the SMTP log: the replied, bounced and unsubscribed recipients got step 1 only; the out-of-office,
    # the soft-bounced and the silent ones every step.
    assert {a: received_first.get(a, []) for a in expected_first} == expected_first
    stopped_addresses = {address(i) for i in STOPPED}
    late = [rcpt for rcpt in rcpts if rcpt.address.lower() in stopped_addresses and rcpt.at > delivered_at
            and rcpt.mail_from in first_senders]  # fmt: skip
    assert not late, f"mailed after their answer: {late}"
    # The suppressed addresses are refused by the other campaign: not even a RCPT; everyone else got its email.
    suppressed_addresses = {address(i) for i in SUPPRESSED}
    assert set(received_second) == expected_second
    assert not [rcpt for rcpt in rcpts if rcpt.mail_from in second_senders and rcpt.address in suppressed_addresses]
    refused = SendRecord.objects.filter(campaign=second.campaign, recipient__email__in=suppressed_addresses)
    assert set(refused.values_list("state", flat=True)) <= {SendRecord.State.SKIPPED}

    # What the operator sees on the campaign's page.
    statuses = dict(Recipient.objects.filter(lead__campaign=first.campaign).values_list("email", "status"))
    assert statuses[address(0)] == Recipient.Status.REPLIED
    assert {statuses[address(i)] for i in (1, 2, 3, 4)} == {Recipient.Status.BOUNCED}
    assert statuses[address(7)] == Recipient.Status.UNSUBSCRIBED
    assert statuses[address(5)] == statuses[address(6)] == Recipient.Status.CONTACTED
    assert Activity.objects.filter(kind=Activity.Kind.AUTO_REPLIED, recipient__email=address(6)).exists()
    assert Activity.objects.filter(kind=Activity.Kind.SOFT_BOUNCED, recipient__email=address(5)).exists()
    stopped = Lead.objects.filter(campaign=first.campaign, state=Lead.State.STOPPED)
    assert set(stopped.values_list("recipients__email", flat=True)) == stopped_addresses
