"""A sequence as a careful human sender writes it, judged by what the SMTP server received: a batch acts only
under its current claim and never before a step is due, one sender per lead, replies stop follow-ups, threaded
steps never carry a placeholder subject, and the longest-waiting lead goes first."""

from datetime import timedelta
from email import policy
from email.parser import BytesParser

import pytest
from django.db import connection

from campaigns.models import Activity, Lead, Recipient, SenderAccount, SendRecord
from campaigns.services.batches import lead_batch_send
from campaigns.services.dispatch import dispatch_due
from campaigns.services.recipients import recipient_mark_replied
from campaigns.services.smtp import SmtpSessions
from campaigns.tests.scenarios import campaign_scenario, lead_add, run_until_idle
from emailsys import clock
from emailsys.testing import RecordingSmtpServer

pytestmark = pytest.mark.django_db


class MovingClock:
    """The campaign clock, moved by the test."""

    def __init__(self, monkeypatch) -> None:
        self.at = clock.now()
        monkeypatch.setattr(clock, "now", lambda: self.at)

    def advance(self, **delta) -> None:
        self.at += timedelta(**delta)


@pytest.fixture
def moving_clock(monkeypatch) -> MovingClock:
    return MovingClock(monkeypatch)


def parsed(mail):
    return BytesParser(policy=policy.default).parsebytes(mail.content)


def send(batch) -> dict[int, list[str]]:
    sessions = SmtpSessions()
    try:
        return lead_batch_send(lead_ids=batch.lead_ids, sessions=sessions, claim=batch.claim)
    finally:
        sessions.close()


# --- 1. a stale or repeated batch does nothing --------------------------------------------------------------


def test_a_second_copy_of_a_batch_sends_nothing_and_no_step_goes_before_its_delay(moving_clock) -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=2, recipients_per_lead=1, steps=2,
                                     step_delay_seconds=86400, daily_limit=50)  # fmt: skip
        (batch,) = dispatch_due(now=clock.now()).batches
        send(batch)
        assert len(smtp.snapshot()) == 2  # step 1 to both
        moving_clock.advance(minutes=10)  # the lease (default 5 min) passed: Redis redelivers the same message
        outcomes = send(batch)
        moving_clock.advance(hours=2)
        send(batch)  # and again, much later
        assert len(smtp.snapshot()) == 2, "a repeated batch sent a follow-up before its one-day delay"
        assert all(
            result == ["stale claim: another copy or a newer claim holds the lead"] for result in outcomes.values()
        )
        assert set(Lead.objects.filter(campaign=scenario.campaign).values_list("current_step", flat=True)) == {2}


def test_a_copy_whose_lead_was_claimed_again_does_nothing_and_is_counted_in_metrics(moving_clock, client) -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=1, recipients_per_lead=1, steps=1, daily_limit=50)
        (old,) = dispatch_due(now=clock.now()).batches
        moving_clock.advance(minutes=10)  # the batch waited in a backlog longer than its lease
        (new,) = dispatch_due(now=clock.now()).batches
        assert new.claim != old.claim
        before = _metric(client, 'emailsys_events_total{event="stale_batch_leads"}')
        assert send(old) == {scenario.leads[0].id: ["stale claim: another copy or a newer claim holds the lead"]}
        assert smtp.snapshot() == []
        send(new)
        assert len(smtp.snapshot()) == 1
        assert _metric(client, 'emailsys_events_total{event="stale_batch_leads"}') == before + 1


def _metric(client, name: str) -> float:
    text = client.get("/metrics").content.decode()
    line = next((line for line in text.splitlines() if line.startswith(name + " ")), f"{name} 0")
    return float(line.rsplit(" ", 1)[1])


def test_a_batch_never_sends_a_step_before_it_is_due_even_with_a_current_claim(moving_clock) -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=1, recipients_per_lead=1, steps=2,
                                     step_delay_seconds=3600, daily_limit=50)  # fmt: skip
        run_until_idle()
        lead = Lead.objects.get(id=scenario.leads[0].id)
        assert lead.current_step == 2 and lead.step_due_at > clock.now()
        # whatever brought it (a clock or a broker), a claim on a lead that is not due yet sends nothing
        Lead.objects.filter(id=lead.id).update(next_due_at=clock.now())
        (batch,) = dispatch_due(now=clock.now()).batches
        assert send(batch) == {lead.id: ["step not due yet"]}
        assert len(smtp.snapshot()) == 1
        assert Lead.objects.get(id=lead.id).next_due_at == lead.step_due_at
        moving_clock.advance(seconds=3601)
        run_until_idle()
        assert len(smtp.snapshot()) == 2


# --- 2. one sender per lead -----------------------------------------------------------------------------------


def _senders_per_lead(mails) -> dict[str, set[str]]:
    senders: dict[str, set[str]] = {}
    for mail in mails:
        lead = mail.rcpt_tos[0].split(".", 1)[1].split("@")[0]  # r0.lead3@customer.test → lead3
        senders.setdefault(lead, set()).add(mail.mail_from)
    return senders


def test_every_email_of_a_lead_comes_from_the_account_that_sent_its_first(moving_clock) -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, accounts=3, leads=7, recipients_per_lead=2, steps=3,
                                     step_delay_seconds=60, daily_limit=100, threaded_follow_up=True,
                                     min_wait_seconds=5)  # fmt: skip
        for _ in range(200):  # the min wait spreads each round's leads over the accounts
            run_until_idle()
            if len(smtp.snapshot()) == 7 * 2 * 3:
                break
            moving_clock.advance(seconds=5)
        mails = smtp.snapshot()
    assert len(mails) == 7 * 2 * 3
    senders = _senders_per_lead(mails)
    assert all(len(accounts) == 1 for accounts in senders.values()), senders
    assert len({next(iter(accounts)) for accounts in senders.values()}) == 3  # leads spread over the accounts
    for lead in Lead.objects.filter(campaign=scenario.campaign).select_related("sender_account"):
        assert {lead.sender_account.email} == senders[f"lead{lead.external_id[1:]}"]


def test_the_lead_s_sender_is_shown_in_the_admin_the_api_and_show_lead_details(client, admin_user, capsys) -> None:
    from django.core.management import call_command

    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=1, recipients_per_lead=1, steps=2, daily_limit=50,
                                     step_delay_seconds=600)  # fmt: skip
        run_until_idle()
        (mail,) = smtp.snapshot()
    lead = scenario.leads[0]
    client.force_login(admin_user)
    assert client.get(f"/api/v1/leads/{lead.id}/").json()["sender_email"] == mail.mail_from
    assert mail.mail_from in client.get(f"/admin/campaigns/lead/{lead.id}/change/").content.decode()
    call_command("show_lead_details", str(lead.id))
    assert any(line.split() == ["Sender:", mail.mail_from] for line in capsys.readouterr().out.splitlines())


def test_a_lead_waits_for_its_sender_when_it_has_no_room_and_moves_only_when_it_is_disabled(moving_clock) -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, accounts=2, leads=2, recipients_per_lead=1, steps=2,
                                     daily_limit=1)  # fmt: skip
        run_until_idle()
        first = {mail.rcpt_tos[0]: mail.mail_from for mail in smtp.snapshot()}
        assert len(set(first.values())) == 2  # one lead on each account, each account's day used up
        busy = SenderAccount.objects.get(email=first["r0.lead0@customer.test"])
        SenderAccount.objects.filter(id=busy.id).update(daily_limit=5)  # room on one account only
        Lead.objects.update(next_due_at=clock.now())  # both look again now
        run_until_idle()
        second = smtp.snapshot()[2:]
        assert [(m.rcpt_tos[0], m.mail_from) for m in second] == [("r0.lead0@customer.test", busy.email)]
        other = SenderAccount.objects.exclude(id=busy.id).get(campaigns=scenario.campaign)
        assert Lead.objects.get(external_id="L1").state == Lead.State.IN_PROGRESS  # lead1 waits for its sender

        SenderAccount.objects.filter(id=other.id).update(status=SenderAccount.Status.DISABLED)
        Lead.objects.update(next_due_at=clock.now())
        run_until_idle()
        moved = smtp.snapshot()[3:]
        assert [(m.rcpt_tos[0], m.mail_from) for m in moved] == [("r0.lead1@customer.test", busy.email)]
        lead1 = Lead.objects.get(external_id="L1")
        assert lead1.sender_account_id == busy.id
        change = Activity.objects.get(kind=Activity.Kind.SENDER_CHANGED, lead=lead1)
        assert "disabled" in change.message


def test_rotate_spreads_unthreaded_steps_but_a_threaded_step_replies_from_the_previous_account(moving_clock) -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, accounts=2, leads=1, recipients_per_lead=1, steps=3,
                                     daily_limit=100)  # fmt: skip
        scenario.campaign.sender_policy = "rotate"
        scenario.campaign.save()
        step3 = scenario.steps[2]
        step3.threaded = True
        step3.save()
        run_until_idle()
        step1, step2, step3_mail = smtp.snapshot()
    assert step1.mail_from != step2.mail_from  # round robin for unthreaded steps
    assert step3_mail.mail_from == step2.mail_from
    assert parsed(step3_mail)["In-Reply-To"] == parsed(step2)["Message-ID"]


# --- 3. replies stop follow-ups -------------------------------------------------------------------------------


def test_a_reply_stops_the_whole_lead_with_who_and_when(moving_clock, client, admin_user) -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=2, recipients_per_lead=2, steps=2, daily_limit=50,
                                     step_delay_seconds=60)  # fmt: skip
        run_until_idle()
        assert len(smtp.snapshot()) == 4
        client.force_login(admin_user)
        lead0 = scenario.leads[0]
        answer = client.post(f"/api/v1/leads/{lead0.id}/replied/", {"email": "R1.lead0@customer.test"},
                             content_type="application/json")  # fmt: skip
        assert answer.status_code == 200, answer.content
        assert answer.json()["state"] == "stopped"
        assert "r1.lead0@customer.test replied on" in answer.json()["stop_reason"]
        moving_clock.advance(seconds=61)
        run_until_idle()
        later = [mail.rcpt_tos[0] for mail in smtp.snapshot()[4:]]
    assert sorted(later) == ["r0.lead1@customer.test", "r1.lead1@customer.test"]
    assert Activity.objects.filter(kind=Activity.Kind.REPLIED, recipient__email="r1.lead0@customer.test").exists()


def test_without_stop_on_reply_only_the_recipient_who_replied_gets_nothing_more(moving_clock) -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=1, recipients_per_lead=2, steps=2, daily_limit=50,
                                     step_delay_seconds=60)  # fmt: skip
        scenario.campaign.stop_on_reply = False
        scenario.campaign.save()
        run_until_idle()
        recipient_mark_replied(recipient=Recipient.objects.get(email="r0.lead0@customer.test"), source="test")
        moving_clock.advance(seconds=61)
        run_until_idle()
        later = [mail.rcpt_tos[0] for mail in smtp.snapshot()[2:]]
    assert later == ["r1.lead0@customer.test"]
    assert SendRecord.objects.get(recipient__email="r0.lead0@customer.test", step__order=2).state == "skipped"


@pytest.mark.django_db(transaction=True)
def test_a_reply_recorded_while_the_batch_is_in_flight_counts_before_its_next_send(moving_clock) -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=1, recipients_per_lead=3, steps=1, daily_limit=50)
        scenario.campaign.stop_on_reply = False
        scenario.campaign.save()
        replied = Recipient.objects.get(email="r1.lead0@customer.test")

        # while the server holds its answer to the first email, the second recipient's reply comes in
        def reply_arrives(mail) -> None:
            if mail.rcpt_tos == ("r0.lead0@customer.test",):
                recipient_mark_replied(recipient=replied, source="inbound")
            connection.close()  # this server thread's own database connection

        smtp.before_data_reply = reply_arrives
        run_until_idle()
        received = [mail.rcpt_tos[0] for mail in smtp.snapshot()]
    assert received == ["r0.lead0@customer.test", "r2.lead0@customer.test"]


def test_admin_marking_a_recipient_replied_stops_the_lead(client, admin_user) -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=1, recipients_per_lead=1, steps=2, daily_limit=50,
                                     step_delay_seconds=0)  # fmt: skip
        recipient = Recipient.objects.get(lead=scenario.leads[0])
        client.force_login(admin_user)
        page = client.post(
            "/admin/campaigns/recipient/", {"action": "mark_replied", "_selected_action": [recipient.id]}
        )
        assert page.status_code == 302
        run_until_idle()
        assert smtp.snapshot() == []
    lead = Lead.objects.get(id=scenario.leads[0].id)
    assert lead.state == Lead.State.STOPPED and lead.stop_reason.startswith("r0.lead0@customer.test replied on")


def test_mark_replied_command_says_what_it_did(capsys) -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    scenario = campaign_scenario(smtp_port=1, leads=1, recipients_per_lead=1, steps=1)
    call_command("mark_replied", "R0.lead0@customer.test")
    assert f"r0.lead0@customer.test (lead {scenario.leads[0].id}): marked as replied; lead" in capsys.readouterr().out
    with pytest.raises(CommandError, match="No recipient nobody@example.com"):
        call_command("mark_replied", "nobody@example.com")
    with pytest.raises(CommandError, match="not an ISO 8601 time"):
        call_command("mark_replied", "r0.lead0@customer.test", "--at", "yesterday")


# --- 5. no placeholder subject --------------------------------------------------------------------------------


def _placeholder_follow_up(scenario) -> None:
    template = scenario.steps[1].template
    template.subject = "-"
    template.save()
    step = scenario.steps[1]
    step.threaded = True
    step.save()


def test_a_threaded_step_after_an_unknown_email_threads_on_it(moving_clock) -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=1, recipients_per_lead=1, steps=2, daily_limit=50)
        _placeholder_follow_up(scenario)
        smtp.data_reply = "421 4.4.2 connection dropped"  # no: an unknown outcome is a lost verdict; see below
        smtp.data_reply = "250 Message accepted"
        (batch,) = dispatch_due(now=clock.now()).batches
        send(batch)
        first = smtp.snapshot()[0]
        # the verdict of step 1 was lost (the worker died after the final dot): the ledger says unknown
        SendRecord.objects.filter(step__order=1).update(state=SendRecord.State.UNKNOWN, sent_at=None)
        run_until_idle()
        follow_up = smtp.snapshot()[1]
    assert parsed(follow_up)["Subject"] == "Re: " + parsed(first)["Subject"]
    assert parsed(follow_up)["In-Reply-To"] == parsed(first)["Message-ID"]


def test_a_threaded_step_after_a_failed_email_starts_afresh_with_a_real_subject() -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=1, recipients_per_lead=1, steps=2, daily_limit=50)
        _placeholder_follow_up(scenario)
        smtp.data_reply = "554 5.6.0 message refused"
        run_until_idle()
        assert SendRecord.objects.get(step__order=1).state == SendRecord.State.FAILED
        smtp.data_reply = "250 Message accepted"
        run_until_idle()
        (mail,) = smtp.snapshot()[1:]
    message = parsed(mail)
    assert message["Subject"] == "Hello there from Sender 0" or message["Subject"].startswith("Hello ")
    assert message["Subject"] != "-" and not message["Subject"].startswith("Re:")
    assert message["In-Reply-To"] is None


def test_a_placeholder_subject_is_refused_on_an_unthreaded_step(client, admin_user) -> None:
    from django.core.exceptions import ValidationError

    scenario = campaign_scenario(smtp_port=1, leads=0, steps=2)
    template = scenario.steps[1].template
    template.subject = "-"
    template.save()
    with pytest.raises(ValidationError, match="placeholder"):
        scenario.steps[1].full_clean()
    scenario.steps[1].threaded = True
    scenario.steps[1].full_clean()  # a threaded follow-up may reply with "Re:" the previous subject


# --- 6. overdue first -----------------------------------------------------------------------------------------


def test_a_lead_that_waited_for_an_account_keeps_its_place_before_newly_due_ones(moving_clock) -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, accounts=1, leads=1, recipients_per_lead=1, steps=1,
                                     daily_limit=0)  # fmt: skip
        waiting = scenario.leads[0]
        run_until_idle()  # no room: it waits until local midnight
        assert Lead.objects.get(id=waiting.id).next_due_at > clock.now()
        moving_clock.advance(days=1)
        # a follow-up that became due an hour ago, but whose next look is a second before the waiting lead's
        waiting_next = Lead.objects.get(id=waiting.id).next_due_at
        newer = lead_add(campaign=scenario.campaign, index=9, recipients=1, next_due_at=waiting_next)
        Lead.objects.filter(id=newer.id).update(
            next_due_at=waiting_next - timedelta(seconds=1), step_due_at=clock.now() - timedelta(hours=1)
        )
        (batch,) = dispatch_due(now=clock.now(), limit=1).batches
    assert batch.lead_ids == [waiting.id]


# --- the campaign file and the To: line -----------------------------------------------------------------------


def test_a_campaign_file_sets_the_sender_policy_and_stop_on_reply_and_refuses_wrong_values() -> None:
    from django.core.exceptions import ValidationError

    from campaigns.services.imports import campaign_import

    step = {"template": {"name": "t-policy", "subject": "Hello", "body_text": "Hi"}}
    campaign = campaign_import(data={"name": "Rotating", "sender_policy": "rotate", "stop_on_reply": False,
                                     "steps": [step]})  # fmt: skip
    assert (campaign.sender_policy, campaign.stop_on_reply) == ("rotate", False)
    with pytest.raises(ValidationError) as refused:
        campaign_import(data={"name": "Bad", "sender_policy": "random", "stop_on_reply": "yes", "steps": [step]})
    text = " ".join(refused.value.messages)
    assert "sender_policy" in text and "random" in text and "stop_on_reply: must be true or false" in text


def test_to_carries_the_name_built_from_first_and_last_when_the_csv_has_no_name_column() -> None:
    import io

    from campaigns.services.imports import leads_import_csv

    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=0, steps=1, daily_limit=50)
        csv_file = io.BytesIO(b"lead_id,email,first_name,last_name\nacme,maria@acme.test,Maria,Garcia\n")
        leads_import_csv(campaign=scenario.campaign, file=csv_file)
        run_until_idle()
        (mail,) = smtp.snapshot()
    to = parsed(mail)["To"].addresses[0]
    assert (to.display_name, to.addr_spec) == ("Maria Garcia", "maria@acme.test")


def test_reset_account_limits_lets_a_lead_waiting_for_its_sender_go_now(moving_clock) -> None:
    from django.core.management import call_command

    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, accounts=1, leads=1, recipients_per_lead=1, steps=2,
                                     daily_limit=1)  # fmt: skip
        run_until_idle()
        assert len(smtp.snapshot()) == 1  # step 2 waits for tomorrow's room
        call_command("reset_account_limits", str(scenario.accounts[0].id))
        run_until_idle()
        assert len(smtp.snapshot()) == 2
