"""What an operator and a recipient notice: unsubscribing, suppression, threaded follow-ups, template errors,
accounts paused by their server, header injection, dry runs, test sends, unknown sends resolved by hand."""

from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser

import pytest
from django.db import connection

from campaigns.models import (
    Activity,
    Campaign,
    DryRunRecord,
    EmailTemplate,
    Lead,
    Recipient,
    SenderAccount,
    SendRecord,
)
from campaigns.services.outcomes import Outcome
from campaigns.services.previews import lead_dry_run, step_send_test
from campaigns.services.sends import send_record_resend, send_record_resolve
from campaigns.services.smtp import SmtpSessions, smtp_connect, smtp_deliver
from campaigns.services.templating import TemplateRenderError, template_render
from campaigns.services.windows import window_next_open
from campaigns.tests.scenarios import campaign_scenario, run_until_idle
from emailsys import clock
from emailsys.testing import RecordingSmtpServer, free_port

pytestmark = pytest.mark.django_db


def parse(content: bytes):
    return BytesParser(policy=policy.default).parsebytes(content)


def test_one_click_unsubscribe_stops_every_later_email(client) -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=1, recipients_per_lead=1, steps=2, daily_limit=50,
                                     step_delay_seconds=0)  # fmt: skip
        recipient = Recipient.objects.get(lead=scenario.leads[0])
        Lead.objects.filter(id=scenario.leads[0].id).update(next_due_at=clock.now())
        # step 1 goes out, then the recipient clicks the one-click unsubscribe before step 2
        from campaigns.services.batches import lead_batch_send
        from campaigns.services.dispatch import dispatch_due

        (batch,) = dispatch_due(now=clock.now()).batches
        sessions = SmtpSessions()
        lead_batch_send(lead_ids=[scenario.leads[0].id], sessions=sessions, claim=batch.claim)
        assert len(smtp.snapshot()) == 1
        page = client.get(f"/u/{recipient.unsubscribe_token}/")
        assert page.status_code == 200 and recipient.email in page.content.decode()
        response = client.post(f"/u/{recipient.unsubscribe_token}/", {"List-Unsubscribe": "One-Click"})
        assert response.status_code == 200
        run_until_idle()
        sessions.close()
        assert len(smtp.snapshot()) == 1

    recipient.refresh_from_db()
    assert recipient.status == Recipient.Status.UNSUBSCRIBED
    skipped = SendRecord.objects.get(recipient=recipient, step__order=2)
    assert skipped.state == SendRecord.State.SKIPPED and "unsubscribed" in skipped.last_error
    assert Activity.objects.filter(kind="unsubscribed", recipient=recipient).count() == 1
    assert client.get("/u/00000000-0000-0000-0000-000000000000/").status_code == 404


def test_threaded_follow_up_replies_in_the_same_conversation() -> None:
    with RecordingSmtpServer() as smtp:
        campaign_scenario(smtp_port=smtp.port, leads=1, recipients_per_lead=1, steps=2, daily_limit=50,
                          threaded_follow_up=True)  # fmt: skip
        run_until_idle()
        first, second = (parse(mail.content) for mail in smtp.snapshot())

    assert second["Subject"] == f"Re: {first['Subject']}"
    assert second["In-Reply-To"] == first["Message-ID"]
    assert second["References"] == first["Message-ID"]


def test_a_template_error_fails_only_that_recipient() -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=2, recipients_per_lead=1, steps=1, daily_limit=50)
        broken = scenario.leads[0]
        template = scenario.steps[0].template
        template.body_text = "Your plan: {{ plan.upper() }}"  # a number has no upper(): this lead cannot render
        template.save()
        Lead.objects.filter(id=broken.id).update(custom_fields={"plan": 5})
        Lead.objects.filter(id=scenario.leads[1].id).update(custom_fields={"plan": "gold"})
        run_until_idle()
        mails = smtp.snapshot()

    failed = SendRecord.objects.get(lead=broken)
    assert failed.state == SendRecord.State.FAILED and failed.last_error.startswith("template error:")
    assert Activity.objects.filter(kind="template_error", lead=broken).exists()
    assert [mail.rcpt_tos for mail in mails] == [("r0.lead1@customer.test",)]


def test_sandbox_blocks_python_internals() -> None:
    evil = EmailTemplate(subject="x", body_text="{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TemplateRenderError, match="SecurityError"):
        template_render(template=evil, context={}, signature="")


def test_lead_data_cannot_inject_headers() -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=1, recipients_per_lead=1, steps=1, daily_limit=50)
        Recipient.objects.filter(lead=scenario.leads[0]).update(
            first_name="Eve\r\nBcc: victim@evil.test", name="Eve\nX-Injected: yes"
        )
        run_until_idle()
        (mail,) = smtp.snapshot()

    message = parse(mail.content)
    assert message["Bcc"] is None and message["X-Injected"] is None
    assert mail.rcpt_tos == ("r0.lead0@customer.test",)
    assert message["Subject"] == "Hello Eve Bcc: victim@evil.test from Sender 0"


def test_authentication_failure_pauses_the_account_and_leaves_recipients_alone() -> None:
    with RecordingSmtpServer(password="right") as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, accounts=1, leads=1, recipients_per_lead=1, steps=1)
        SenderAccount.objects.filter(id=scenario.accounts[0].id).update(smtp_username="user")
        account = SenderAccount.objects.get(id=scenario.accounts[0].id)
        account.smtp_password = "wrong"
        account.save()
        run_until_idle()
        assert smtp.snapshot() == []

    account.refresh_from_db()
    assert account.status == SenderAccount.Status.PAUSED
    assert account.status_reason.startswith("authentication failed: 535")
    record = SendRecord.objects.get(lead=scenario.leads[0])
    assert record.state == SendRecord.State.DEFERRED
    assert Recipient.objects.get(lead=scenario.leads[0]).status == Recipient.Status.NOT_CONTACTED
    assert Activity.objects.filter(kind="account_paused", account=account).exists()


def test_smtp_password_is_encrypted_at_rest() -> None:
    account = SenderAccount.objects.create(email="a@x.test", smtp_host="127.0.0.1", smtp_password="s3cret-pw")
    with connection.cursor() as cursor:
        cursor.execute("SELECT smtp_password FROM campaigns_senderaccount WHERE id = %s", [account.id])
        stored = cursor.fetchone()[0]
    assert "s3cret-pw" not in stored and stored.startswith("gAAAA")
    assert SenderAccount.objects.get(id=account.id).smtp_password == "s3cret-pw"


def test_unknown_outcome_after_data_is_flagged_and_never_retried() -> None:
    with RecordingSmtpServer(data_delay=3) as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=1, recipients_per_lead=2, steps=1, daily_limit=50)
        from django.test import override_settings

        with override_settings(CAMPAIGN_SMTP_TIMEOUT=1):
            run_until_idle()
        record = SendRecord.objects.get(recipient__position=0, lead=scenario.leads[0])
        assert record.state == SendRecord.State.UNKNOWN and "after DATA" in record.last_error
        # the lead moved on: recipient 2 was attempted too, and nothing is retried
        assert SendRecord.objects.filter(lead=scenario.leads[0]).count() == 2
        assert Activity.objects.filter(kind="unknown").count() == 2

        resolved = send_record_resolve(record_id=record.id, action="mark_sent", actor="operator")
        assert resolved.state == SendRecord.State.SENT and resolved.resolved_by == "operator"
        with pytest.raises(ValueError, match="not unknown"):
            send_record_resolve(record_id=record.id, action="mark_failed", actor="operator")


def test_resend_anyway_sends_the_unknown_email_again_once_with_a_new_message_id() -> None:
    with RecordingSmtpServer(data_delay=3) as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=1, recipients_per_lead=1, steps=2, daily_limit=50,
                                     step_delay_seconds=3600)  # fmt: skip
        from django.test import override_settings

        with override_settings(CAMPAIGN_SMTP_TIMEOUT=1):
            run_until_idle()
        record = SendRecord.objects.get(lead=scenario.leads[0])
        assert record.state == SendRecord.State.UNKNOWN
        smtp.data_delay = 0
        send_record_resolve(record_id=record.id, action="resend", actor="operator")
        sessions = SmtpSessions()
        try:
            assert send_record_resend(record_id=record.id, sessions=sessions) == "sent"
            assert send_record_resend(record_id=record.id, sessions=sessions) == f"send {record.id} is sent"
        finally:
            sessions.close()
        mails = smtp.snapshot()

    resent = SendRecord.objects.get(id=record.id)
    assert len(mails) == 1  # the server dropped the timed-out attempt; the resend went once
    assert resent.state == SendRecord.State.SENT and resent.attempts == 2
    assert parse(mails[0].content)["Message-ID"] == resent.message_id != record.message_id
    lead = Lead.objects.get(id=scenario.leads[0].id)
    assert lead.current_step == 2 and lead.last_sent_at >= resent.sent_at  # the lead's place is unchanged


def test_dry_run_renders_and_stores_without_sending_or_advancing() -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=1, recipients_per_lead=2, steps=1, daily_limit=50)
        lead = scenario.leads[0]
        records = lead_dry_run(lead=Lead.objects.get(id=lead.id))
        assert smtp.snapshot() == []
        assert [r.recipient.position for r in records] == [0, 1] and all(r.message for r in records)
        assert DryRunRecord.objects.filter(campaign=scenario.campaign).count() == 2
        assert not SendRecord.objects.exists()
        run_until_idle()  # the real send is not blocked by the dry run
        assert len(smtp.snapshot()) == 2


def test_test_send_goes_to_the_operator_marked_as_a_test() -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=1, recipients_per_lead=1, steps=1, daily_limit=50)
        test = step_send_test(step=scenario.steps[0], to_email="ops@team.test", account=scenario.accounts[0],
                              lead=scenario.leads[0]).test  # fmt: skip
        (mail,) = smtp.snapshot()

    message = parse(mail.content)
    assert mail.rcpt_tos == ("ops@team.test",)
    assert message["Subject"].startswith("[TEST] Hello") and message["X-Emailsys-Test"]
    assert test.sent_at and not test.error
    assert not SendRecord.objects.exists()
    assert Recipient.objects.get().status == Recipient.Status.NOT_CONTACTED


def test_connection_refused_defers_before_anything_is_sent() -> None:
    account = SenderAccount(email="a@x.test", smtp_host="127.0.0.1", smtp_port=free_port(), security="none")
    with pytest.raises(OSError):
        smtp_connect(account, timeout=2)


def test_reply_to_final_dot_decides_sent_or_deferred() -> None:
    with RecordingSmtpServer() as smtp:
        smtp.data_reply = "451 4.3.0 try later"
        account = SenderAccount(email="a@x.test", smtp_host="127.0.0.1", smtp_port=smtp.port, security="none")
        conn = smtp_connect(account, timeout=5)
        message = b"Subject: x\r\n\r\nhi"
        result = smtp_deliver(conn, envelope_from="a@x.test", recipient="b@y.test", message_bytes=message,
                              on_handover=lambda: True)  # fmt: skip
        assert result.outcome is Outcome.DEFERRED and "451" in result.detail
        smtp.data_reply = "250 ok"
        result = smtp_deliver(conn, envelope_from="a@x.test", recipient="b@y.test", message_bytes=message,
                              on_handover=lambda: False)  # fmt: skip
        assert result.outcome is Outcome.DEFERRED and "claim lost" in result.detail
        conn.close()


def test_send_window_moves_due_times_into_the_open_hours() -> None:
    campaign = Campaign(time_zone="Europe/Berlin", send_days=[0, 1, 2, 3, 4], send_hour_start=9, send_hour_end=17)
    saturday_noon = datetime(2026, 11, 21, 11, 0, tzinfo=UTC)  # 12:00 in Berlin
    assert window_next_open(at=saturday_noon, campaign=campaign) == datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    monday_ten = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    assert window_next_open(at=monday_ten, campaign=campaign) == monday_ten
    monday_evening = datetime(2026, 11, 23, 17, 30, tzinfo=UTC)
    assert window_next_open(at=monday_evening, campaign=campaign) == datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    assert window_next_open(at=monday_evening, campaign=Campaign()) == monday_evening


def test_an_address_contacted_by_another_active_campaign_is_skipped_when_configured(settings) -> None:
    settings.CAMPAIGN_CROSS_CONTACT_DAYS = 30
    with RecordingSmtpServer() as smtp:
        first = campaign_scenario(smtp_port=smtp.port, leads=2, recipients_per_lead=1, steps=1, daily_limit=50,
                                  name="First")  # fmt: skip
        Lead.objects.filter(id=first.leads[1].id).update(next_due_at=clock.now() + timedelta(days=9))  # stays active
        second = campaign_scenario(smtp_port=smtp.port, leads=1, recipients_per_lead=1, steps=1, daily_limit=50,
                                   name="Second")  # fmt: skip
        Lead.objects.filter(id=second.leads[0].id).update(next_due_at=clock.now() + timedelta(seconds=1))
        run_until_idle()
        assert len(smtp.snapshot()) == 1
        Lead.objects.filter(id=second.leads[0].id).update(next_due_at=clock.now())
        run_until_idle()
        assert len(smtp.snapshot()) == 1

    assert SendRecord.objects.get(campaign=first.campaign).state == SendRecord.State.SENT
    assert Campaign.objects.get(id=first.campaign.id).status == Campaign.Status.ACTIVE
    skipped = SendRecord.objects.get(campaign=second.campaign)
    assert skipped.state == SendRecord.State.SKIPPED
    assert skipped.last_error == "contacted by another active campaign within 30 days"


def test_jitter_adds_a_random_extra_wait_on_top_of_the_min_wait() -> None:
    from campaigns.services.throttling import accounts_reserve, reservation_commit

    scenario = campaign_scenario(smtp_port=free_port(), accounts=1, leads=0, min_wait_seconds=10)
    SenderAccount.objects.filter(id=scenario.accounts[0].id).update(jitter_seconds=5)
    waits = set()
    for _ in range(5):
        now = clock.now()
        [reservation] = accounts_reserve(campaign_id=scenario.campaign.id, count=1, now=now)
        reservation_commit(reservation=reservation, finished_at=now, delivered=True)
        available = SenderAccount.objects.get(id=scenario.accounts[0].id).next_available_at
        assert timedelta(seconds=10) <= available - now <= timedelta(seconds=15)
        waits.add(available - now)
        SenderAccount.objects.filter(id=scenario.accounts[0].id).update(next_available_at=None)
    assert len(waits) > 1, "the extra wait is random"


def test_campaign_start_and_end_dates_bound_its_sending() -> None:
    from campaigns.services.dispatch import dispatch_due

    scenario = campaign_scenario(smtp_port=free_port(), leads=2, recipients_per_lead=1, steps=1)
    Campaign.objects.filter(id=scenario.campaign.id).update(starts_at=clock.now() + timedelta(hours=1))
    assert dispatch_due(now=clock.now()).batches == []
    Campaign.objects.filter(id=scenario.campaign.id).update(
        starts_at=clock.now() - timedelta(days=2), ends_at=clock.now() - timedelta(days=1)
    )
    result = dispatch_due(now=clock.now())
    assert result.batches == [] and result.completed_campaigns == [scenario.campaign.id]
    assert Campaign.objects.get(id=scenario.campaign.id).status == Campaign.Status.COMPLETED


def test_one_dispatch_tick_claims_a_backlog_bigger_than_one_scan(settings) -> None:
    from campaigns.tasks import dispatch_due_task

    settings.CAMPAIGN_DISPATCH_SCAN_LIMIT = 5
    scenario = campaign_scenario(smtp_port=free_port(), leads=12, recipients_per_lead=1, steps=1)
    assert dispatch_due_task() == 12  # three scans: 5, 5, 2
    assert not Lead.objects.filter(campaign=scenario.campaign, next_due_at__lte=clock.now()).exists()


def test_a_greylisted_recipient_does_not_count_against_the_account_but_a_dead_server_does() -> None:
    from campaigns.services.throttling import ACCOUNT_FAILURES_BEFORE_PAUSE

    with RecordingSmtpServer() as smtp:
        smtp.rcpt_replies["r0.lead0@customer.test"] = "451 4.7.1 Greylisted"
        scenario = campaign_scenario(smtp_port=smtp.port, accounts=1, leads=1, recipients_per_lead=1, steps=1)
        run_until_idle()
    account = SenderAccount.objects.get(id=scenario.accounts[0].id)
    assert account.consecutive_failures == 0 and account.status == SenderAccount.Status.ACTIVE

    SenderAccount.objects.filter(id=account.id).update(smtp_port=free_port())  # nothing listens any more
    for _ in range(ACCOUNT_FAILURES_BEFORE_PAUSE):
        SendRecord.objects.filter(lead=scenario.leads[0]).update(next_attempt_at=clock.now())
        Lead.objects.filter(id=scenario.leads[0].id).update(next_due_at=clock.now())
        run_until_idle()
    account.refresh_from_db()
    assert account.status == SenderAccount.Status.PAUSED and "ConnectionRefusedError" in account.status_reason
    assert Recipient.objects.get(lead=scenario.leads[0]).status == Recipient.Status.NOT_CONTACTED
