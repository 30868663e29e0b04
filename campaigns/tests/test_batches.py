"""How a batch of leads is sent: accounts shared out by the arbiter, and what an operator does meanwhile."""

from collections import Counter

import pytest
from django.db import connection

from campaigns.models import Lead, SendRecord
from campaigns.services.batches import lead_batch_send
from campaigns.services.dispatch import dispatch_due
from campaigns.services.leads import leads_stop
from campaigns.services.smtp import SmtpSessions
from campaigns.tests.scenarios import campaign_scenario
from emailsys import clock
from emailsys.testing import RecordingSmtpServer


def _send_one_batch(campaign) -> dict[int, list[str]]:
    batches = dispatch_due(now=clock.now(), campaign_id=campaign.id).batches
    (claim,) = {batch.claim for batch in batches}  # one scan, one claim
    sessions = SmtpSessions()
    try:
        lead_ids = [lead_id for batch in batches for lead_id in batch.lead_ids]
        return lead_batch_send(lead_ids=lead_ids, sessions=sessions, claim=claim)
    finally:
        sessions.close()


@pytest.mark.django_db
def test_a_batch_fills_an_unthrottled_account_up_to_its_room_before_the_next() -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, accounts=3, daily_limit=5, leads=12,
                                     recipients_per_lead=1, steps=1)  # fmt: skip
        outcomes = _send_one_batch(scenario.campaign)
        mails = smtp.snapshot()

    assert Counter(outcome for per_lead in outcomes.values() for outcome in per_lead) == {"sent": 12}
    assert sorted(Counter(mail.mail_from for mail in mails).values()) == [2, 5, 5]
    assert len({mail.rcpt_tos for mail in mails}) == 12


@pytest.mark.django_db
def test_an_account_with_a_min_wait_takes_one_send_per_batch_and_the_rest_wait() -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, accounts=3, daily_limit=50, min_wait_seconds=60,
                                     leads=10, recipients_per_lead=1, steps=1)  # fmt: skip
        _send_one_batch(scenario.campaign)
        mails = smtp.snapshot()

    assert sorted(Counter(mail.mail_from for mail in mails).values()) == [1, 1, 1]
    waiting = Lead.objects.filter(campaign=scenario.campaign, state=Lead.State.IN_PROGRESS)
    assert waiting.count() == 7
    assert all(lead.next_due_at is not None for lead in waiting)  # due again when an account is free
    assert not SendRecord.objects.filter(lead__in=waiting).exists()


@pytest.mark.django_db(transaction=True)
def test_a_lead_stopped_by_an_operator_while_its_email_is_in_flight_stays_stopped() -> None:
    """The batch writes where its leads go next at its end; a stop made meanwhile must win."""
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=1, recipients_per_lead=1, steps=1, daily_limit=50)
        lead = scenario.leads[0]

        def operator_stops_the_lead(_mail) -> None:
            try:
                leads_stop(leads=Lead.objects.filter(id=lead.id), reason="stopped by an operator")
            finally:
                connection.close()  # this runs in the SMTP server's thread

        smtp.before_data_reply = operator_stops_the_lead
        outcomes = _send_one_batch(scenario.campaign)

    lead.refresh_from_db()
    assert outcomes[lead.id] == ["sent"]
    assert SendRecord.objects.get(lead=lead).state == SendRecord.State.SENT
    assert (lead.state, lead.stop_reason, lead.next_due_at) == (Lead.State.STOPPED, "stopped by an operator", None)
