"""The send pipeline in-process against a real SMTP server: rendering, headers, limits, step advance."""

import pytest

from campaigns.models import Activity, Lead, Recipient, SendRecord, Suppression
from campaigns.tests.scenarios import assert_mail_is_its_send_record, campaign_scenario, run_until_idle
from emailsys import clock
from emailsys.testing import RecordingSmtpServer

pytestmark = pytest.mark.django_db


def test_daily_limits_cap_the_day_and_each_message_is_the_stored_rendering() -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=4, recipients_per_lead=2, steps=2)
        scenario.campaign.sender_policy = "rotate"  # any account with room may send any lead's next email
        scenario.campaign.save()
        run_until_idle()
        mails = smtp.snapshot()

    assert len(mails) == 15  # 3 accounts × 5 per day, of 16 emails in the sequence
    seen = set()
    for mail in mails:
        record = assert_mail_is_its_send_record(mail, scenario.campaign)
        assert (record.recipient_id, record.step_id) not in seen
        seen.add((record.recipient_id, record.step_id))

    per_account = {a.email: sum(1 for m in mails if m.mail_from == a.email) for a in scenario.accounts}
    assert per_account == {a.email: 5 for a in scenario.accounts}
    assert Recipient.objects.filter(lead__campaign=scenario.campaign, status="contacted").count() == 8
    waiting = Lead.objects.get(campaign=scenario.campaign, state="in_progress")
    assert waiting.current_step == 2 and waiting.next_due_at.date() > clock.now().date()


def test_rcpt_rejection_bounces_and_suppresses_only_that_recipient() -> None:
    with RecordingSmtpServer() as smtp:
        smtp.rcpt_replies["r0.lead0@customer.test"] = "550 5.1.1 No such user"
        scenario = campaign_scenario(smtp_port=smtp.port, leads=1, recipients_per_lead=2, steps=1, daily_limit=50)
        run_until_idle()
        mails = smtp.snapshot()

    assert [m.rcpt_tos for m in mails] == [("r1.lead0@customer.test",)]
    bounced = Recipient.objects.get(email="r0.lead0@customer.test")
    assert bounced.status == Recipient.Status.BOUNCED
    assert Suppression.objects.filter(kind="address", value="r0.lead0@customer.test").exists()
    assert SendRecord.objects.get(recipient=bounced).state == SendRecord.State.BOUNCED
    assert Lead.objects.get(campaign=scenario.campaign).state == Lead.State.FINISHED
    scenario.campaign.refresh_from_db()
    assert scenario.campaign.status == "completed"
    assert Activity.objects.filter(kind="bounced", recipient=bounced).exists()


def test_temporary_rcpt_failure_defers_without_failing_the_recipient() -> None:
    with RecordingSmtpServer() as smtp:
        smtp.rcpt_replies["r0.lead0@customer.test"] = "451 4.7.1 Try again later"
        scenario = campaign_scenario(smtp_port=smtp.port, leads=1, recipients_per_lead=1, steps=1, daily_limit=50)
        run_until_idle()
        assert smtp.snapshot() == []

    record = SendRecord.objects.get(lead__campaign=scenario.campaign)
    assert record.state == SendRecord.State.DEFERRED and "451" in record.last_error
    assert record.next_attempt_at > clock.now()
    assert Recipient.objects.get(lead__campaign=scenario.campaign).status == Recipient.Status.NOT_CONTACTED
    scenario.campaign.refresh_from_db()
    assert scenario.campaign.status == "active"
