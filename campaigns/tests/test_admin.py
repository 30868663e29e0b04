"""The campaigns admin: every page renders, the SMTP password stays write-only, actions call the services."""

import re
from datetime import date, datetime, timedelta

import pytest
from django.contrib import admin
from django.db.models import TextField
from django.db.models.functions import Cast
from django.test import RequestFactory
from django.urls import reverse

from campaigns.models import (
    Activity,
    Campaign,
    DryRunRecord,
    Lead,
    OperatorTestSend,
    Recipient,
    SenderAccount,
    SendRecord,
    Suppression,
)
from campaigns.tests.conftest import NOW
from campaigns.tests.factories import (
    AccountDailyUsageFactory,
    ActivityFactory,
    CampaignAccountFactory,
    CampaignFactory,
    DryRunRecordFactory,
    EmailTemplateFactory,
    LeadFactory,
    OperatorTestSendFactory,
    RecipientFactory,
    SenderAccountFactory,
    SendRecordFactory,
    SequenceStepFactory,
    SuppressionFactory,
)
from emailsys import clock
from emailsys.testing import RecordingSmtpServer, free_port

pytestmark = pytest.mark.django_db

PASSWORD = "Sup3r-Secret-SMTP-pw!"


def url(model, view: str, *args) -> str:
    return reverse(f"admin:campaigns_{model._meta.model_name}_{view}", args=args)


def ciphertext(account: SenderAccount) -> str:
    raw = SenderAccount.objects.annotate(raw=Cast("smtp_password", output_field=TextField()))
    return raw.values_list("raw", flat=True).get(pk=account.pk)


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


@pytest.fixture
def now(monkeypatch) -> datetime:
    monkeypatch.setattr(clock, "now", lambda: NOW)
    return NOW


@pytest.fixture
def world() -> dict:
    """One row of every campaigns model, wired together."""
    account = SenderAccountFactory(smtp_password=PASSWORD, smtp_username="mailer")
    campaign = CampaignFactory(name="Spring outreach")
    CampaignAccountFactory(campaign=campaign, account=account, daily_limit=20)
    step = SequenceStepFactory(campaign=campaign, template=EmailTemplateFactory(name="spring-1"))
    lead = LeadFactory(campaign=campaign, external_id="acme")
    recipient = RecipientFactory(lead=lead, email="jane@acme.example")
    record = SendRecordFactory(
        recipient=recipient,
        step=step,
        account=account,
        state=SendRecord.State.UNKNOWN,
        subject="Hello Jane",
        message="Subject: Hello Jane\n\n<b>not html</b> body",
    )
    return {
        "account": account,
        "campaign": campaign,
        "step": step,
        "lead": lead,
        "recipient": recipient,
        "record": record,
        "usage": AccountDailyUsageFactory(account=account, reserved=4),
        "dry_run": DryRunRecordFactory(recipient=recipient, step=step, account=account),
        "test_send": OperatorTestSendFactory(step=step, account=account),
        "suppression": SuppressionFactory(value="blocked@example.test"),
        "activity": ActivityFactory(campaign=campaign, account=account, detail={"send_record": record.pk}),
        "template": step.template,
        "campaign_account": campaign.account_settings.get(),
    }


# --- every page ---------------------------------------------------------------------------------------------


def test_every_registered_model_has_a_working_changelist_and_change_page(admin_client, world) -> None:
    registered = [model for model in admin.site._registry if model._meta.app_label == "campaigns"]
    assert len(registered) == 13
    rows = {type(obj): obj for obj in world.values()}
    for model in registered:
        obj = rows[model]
        changelist = admin_client.get(url(model, "changelist"))
        assert changelist.status_code == 200, model
        assert url(model, "change", obj.pk) in changelist.content.decode(), f"{model.__name__} row missing"
        change = admin_client.get(url(model, "change", obj.pk))
        assert change.status_code == 200, model
        if admin.site._registry[model].has_add_permission(change.wsgi_request):
            assert admin_client.get(url(model, "add")).status_code == 200, model


def test_campaign_change_page_shows_progress_and_links_the_send_test_page(admin_client, world) -> None:
    campaign = world["campaign"]
    page = admin_client.get(url(Campaign, "change", campaign.pk)).content.decode()
    assert f'data-live-socket="/ws/live/campaign-{campaign.pk}/"' in page
    assert re.search(r"<dt>In progress</dt><dd[^>]*>1</dd>", page)
    assert re.search(r"<dt>Unknown outcome</dt><dd[^>]*>1</dd>", page)
    assert url(Campaign, "send_test", campaign.pk) in page


def test_send_record_page_shows_the_stored_message_escaped_and_read_only(admin_client, world) -> None:
    page = admin_client.get(url(SendRecord, "change", world["record"].pk)).content.decode()
    assert "<pre" in page and "&lt;b&gt;not html&lt;/b&gt; body" in page
    assert 'name="state"' not in page and "_save" not in page


def test_activity_page_shows_detail_as_json(admin_client, world) -> None:
    page = admin_client.get(url(Activity, "change", world["activity"].pk)).content.decode()
    assert f"&quot;send_record&quot;: {world['record'].pk}" in page


def test_changelists_of_campaigns_and_accounts_do_not_query_per_row(
    admin_client, django_assert_max_num_queries
) -> None:
    for index in range(20):
        campaign = CampaignFactory(time_zone=["UTC", "Europe/Berlin", "America/New_York"][index % 3])
        account = SenderAccountFactory(time_zone=campaign.time_zone)
        AccountDailyUsageFactory(account=account, reserved=index)
        SendRecordFactory(recipient=RecipientFactory(lead=LeadFactory(campaign=campaign)), state="sent")
    with django_assert_max_num_queries(10):
        assert admin_client.get(url(Campaign, "changelist")).status_code == 200
    with django_assert_max_num_queries(10):
        assert admin_client.get(url(SenderAccount, "changelist")).status_code == 200
    with django_assert_max_num_queries(10):
        assert admin_client.get(url(SendRecord, "changelist")).status_code == 200


def _changelist_rows(model, admin_user) -> dict:
    request = RequestFactory().get("/")
    request.user = admin_user
    return {row.pk: row for row in admin.site._registry[model].get_queryset(request)}


def test_campaign_list_counts_leads_by_state_and_sends_since_local_midnight(now, admin_user) -> None:
    campaign = CampaignFactory(time_zone="America/New_York")  # 08:00 local: midnight was 04:00 UTC
    LeadFactory.create_batch(2, campaign=campaign)
    LeadFactory(campaign=campaign, state=Lead.State.FINISHED)
    LeadFactory(campaign=campaign, state=Lead.State.STOPPED)
    lead = LeadFactory(campaign=campaign, state=Lead.State.FINISHED)
    for sent_at in (NOW - timedelta(hours=7), NOW - timedelta(hours=9)):  # 05:00 and 03:00 UTC
        SendRecordFactory(recipient=RecipientFactory(lead=lead), state="sent", sent_at=sent_at)
    row = _changelist_rows(Campaign, admin_user)[campaign.pk]
    assert (row.leads_in_progress, row.leads_finished, row.leads_stopped, row.sent_today) == (2, 2, 1, 1)


def test_account_list_shows_usage_of_the_accounts_local_day(now, admin_client, admin_user) -> None:
    utc = SenderAccountFactory(time_zone="UTC", daily_limit=50)
    kiritimati = SenderAccountFactory(time_zone="Pacific/Kiritimati", daily_limit=40)  # UTC+14: already the 11th
    for account in (utc, kiritimati):
        AccountDailyUsageFactory(account=account, day=date(2025, 3, 10), reserved=3)
        AccountDailyUsageFactory(account=account, day=date(2025, 3, 11), reserved=7)
    rows = _changelist_rows(SenderAccount, admin_user)
    assert (rows[utc.pk].reserved_today, rows[kiritimati.pk].reserved_today) == (3, 7)
    page = admin_client.get(url(SenderAccount, "changelist")).content.decode()
    assert 'max="50" value="3"' in page and 'max="40" value="7"' in page


# --- the SMTP password --------------------------------------------------------------------------------------


def account_form(account: SenderAccount, **changes) -> dict:
    data = {
        "email": account.email,
        "from_name": account.from_name,
        "first_name": "",
        "last_name": "",
        "provider": "",
        "signature": "",
        "smtp_host": account.smtp_host,
        "smtp_port": account.smtp_port,
        "security": account.security,
        "smtp_username": account.smtp_username,
        "smtp_password": "",
        "time_zone": account.time_zone,
        "daily_limit": account.daily_limit,
        "min_wait_seconds": account.min_wait_seconds,
        "jitter_seconds": account.jitter_seconds,
    }
    data.update(changes)
    return data


def test_account_pages_never_show_the_password_nor_its_ciphertext(admin_client, world) -> None:
    account = world["account"]
    stored = ciphertext(account)
    assert stored and PASSWORD not in stored
    for page_url in (url(SenderAccount, "change", account.pk), url(SenderAccount, "changelist")):
        page = admin_client.get(page_url).content.decode()
        assert PASSWORD not in page
        assert stored not in page
    change_page = admin_client.get(url(SenderAccount, "change", account.pk)).content.decode()
    assert 'type="password" name="smtp_password"' in change_page
    assert 'name="smtp_password" value=' not in change_page


def test_saving_with_an_empty_password_keeps_it_and_a_new_one_replaces_it(admin_client, world) -> None:
    account = world["account"]
    change_url = url(SenderAccount, "change", account.pk)
    response = admin_client.post(change_url, account_form(account, daily_limit=77))
    assert response.status_code == 302
    saved = SenderAccount.objects.get()
    assert (saved.daily_limit, saved.smtp_password) == (77, PASSWORD)

    response = admin_client.post(change_url, account_form(account, smtp_password="brand-new-pw"))
    assert response.status_code == 302
    assert SenderAccount.objects.get().smtp_password == "brand-new-pw"


def test_a_new_account_gets_its_password_and_a_bad_form_does_not_echo_it(admin_client) -> None:
    template = SenderAccountFactory.build(email="new@emailsys.test")
    response = admin_client.post(url(SenderAccount, "add"), account_form(template, smtp_password=PASSWORD))
    assert response.status_code == 302
    assert SenderAccount.objects.get().smtp_password == PASSWORD

    bad = account_form(template, email="other@emailsys.test", time_zone="Mars/Olympus", smtp_password="typed-pw-1")
    response = admin_client.post(url(SenderAccount, "add"), bad)
    assert response.status_code == 200
    page = response.content.decode()
    assert "not a known time zone" in page and "typed-pw-1" not in page


# --- send records -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "state"),
    [("mark_sent", SendRecord.State.SENT), ("mark_failed", SendRecord.State.FAILED)],
)
def test_unknown_send_actions_resolve_the_record_and_say_so(admin_client, admin_user, world, action, state) -> None:
    record = world["record"]
    response = admin_client.post(
        url(SendRecord, "changelist"), {"action": action, "_selected_action": [record.pk]}, follow=True
    )
    assert response.status_code == 200
    record.refresh_from_db()
    assert record.state == state and record.resolved_by == admin_user.username
    assert any(f"#{record.pk}" in message for message in messages_of(response))
    if state == SendRecord.State.SENT:
        assert Recipient.objects.get(pk=world["recipient"].pk).status == Recipient.Status.CONTACTED


def test_resend_anyway_defers_the_record_and_enqueues_it_after_commit(
    admin_client, world, django_capture_on_commit_callbacks
) -> None:
    record = world["record"]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin_client.post(
            url(SendRecord, "changelist"), {"action": "resend", "_selected_action": [record.pk]}, follow=True
        )
    record.refresh_from_db()
    assert record.state == SendRecord.State.DEFERRED
    # One enqueue (the other callbacks announce the change to live pages, emailsys.live).
    assert len([callback for callback in callbacks if "campaigns.send_resend" in repr(callback)]) == 1
    assert any("queued to be sent again" in message for message in messages_of(response))


def test_resolving_a_send_that_is_not_unknown_is_an_error_message_not_a_crash(admin_client, world) -> None:
    sent = SendRecordFactory(state=SendRecord.State.SENT)
    response = admin_client.post(
        url(SendRecord, "changelist"), {"action": "mark_failed", "_selected_action": [sent.pk]}, follow=True
    )
    assert response.status_code == 200
    sent.refresh_from_db()
    assert sent.state == SendRecord.State.SENT
    assert any(f"send {sent.pk} is sent, not unknown" in message for message in messages_of(response))


def test_unknown_sends_are_one_filter_click_away(admin_client, world) -> None:
    other = SendRecordFactory(state=SendRecord.State.FAILED)
    page = admin_client.get(url(SendRecord, "changelist"), {"state__exact": "unknown"}).content.decode()
    assert url(SendRecord, "change", world["record"].pk) in page
    assert url(SendRecord, "change", other.pk) not in page


# --- accounts -----------------------------------------------------------------------------------------------


def test_test_smtp_reports_a_closed_port_as_a_failure(admin_client) -> None:
    account = SenderAccountFactory(smtp_port=free_port())
    response = admin_client.post(
        url(SenderAccount, "changelist"), {"action": "test_smtp", "_selected_action": [account.pk]}, follow=True
    )
    [message] = response.context["messages"]
    assert message.level_tag == "error"
    assert f"{account.email}: FAILED" in str(message) and "Refused" in str(message)


def test_test_smtp_reports_success_against_a_real_server(admin_client) -> None:
    with RecordingSmtpServer() as server:
        account = SenderAccountFactory(smtp_port=server.port)
        response = admin_client.post(
            url(SenderAccount, "changelist"), {"action": "test_smtp", "_selected_action": [account.pk]}, follow=True
        )
    [message] = response.context["messages"]
    assert message.level_tag == "success"
    assert f"{account.email}: OK" in str(message) and "NOOP 250" in str(message)


def test_account_actions_pause_resume_and_reset_limits(now, admin_client, admin_user) -> None:
    account = SenderAccountFactory(consecutive_failures=2)
    usage = AccountDailyUsageFactory(account=account, day=NOW.date(), reserved=9)
    changelist = url(SenderAccount, "changelist")
    admin_client.post(changelist, {"action": "pause", "_selected_action": [account.pk]})
    account.refresh_from_db()
    assert account.status == SenderAccount.Status.PAUSED and admin_user.username in account.status_reason
    admin_client.post(changelist, {"action": "resume", "_selected_action": [account.pk]})
    admin_client.post(changelist, {"action": "reset_limits", "_selected_action": [account.pk]})
    account.refresh_from_db()
    usage.refresh_from_db()
    assert (account.status, account.consecutive_failures, usage.reserved) == (SenderAccount.Status.ACTIVE, 0, 0)


# --- campaigns ----------------------------------------------------------------------------------------------


def test_resume_without_steps_explains_why_and_pause_resume_work_otherwise(admin_client) -> None:
    empty = CampaignFactory(name="Empty")
    ready = CampaignFactory(name="Ready")
    SequenceStepFactory(campaign=ready)
    CampaignAccountFactory(campaign=ready)
    response = admin_client.post(
        url(Campaign, "changelist"), {"action": "resume", "_selected_action": [empty.pk, ready.pk]}, follow=True
    )
    texts = messages_of(response)
    assert any("Empty: " in text and "needs at least one sequence step" in text for text in texts)
    assert "1 campaign(s) now active." in texts
    admin_client.post(url(Campaign, "changelist"), {"action": "pause", "_selected_action": [ready.pk]})
    assert Campaign.objects.get(pk=ready.pk).status == Campaign.Status.PAUSED
    assert Campaign.objects.get(pk=empty.pk).status == Campaign.Status.DRAFT


def test_reset_progress_asks_first_then_resets(admin_client) -> None:
    campaign = CampaignFactory(status=Campaign.Status.COMPLETED)
    lead = LeadFactory(campaign=campaign, state=Lead.State.FINISHED, current_step=3)
    data = {"action": "reset_progress", "_selected_action": [campaign.pk]}
    confirmation = admin_client.post(url(Campaign, "changelist"), data)
    assert confirmation.status_code == 200
    assert "Yes, reset progress" in confirmation.content.decode()
    assert Lead.objects.get(pk=lead.pk).state == Lead.State.FINISHED

    response = admin_client.post(url(Campaign, "changelist"), {**data, "confirm": "yes"}, follow=True)
    lead.refresh_from_db()
    assert (lead.state, lead.current_step) == (Lead.State.IN_PROGRESS, 1)
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.PAUSED
    assert f"{campaign.name}: 1 lead(s) start over at step 1." in messages_of(response)


def test_dry_run_action_renders_due_leads_and_reports_the_count(admin_client) -> None:
    campaign = CampaignFactory(status=Campaign.Status.ACTIVE)
    SequenceStepFactory(campaign=campaign)
    CampaignAccountFactory(campaign=campaign)
    RecipientFactory.create_batch(2, lead=LeadFactory(campaign=campaign))
    response = admin_client.post(
        url(Campaign, "changelist"), {"action": "dry_run", "_selected_action": [campaign.pk]}, follow=True
    )
    assert f"{campaign.name}: 2 message(s) rendered as dry runs, 0 with errors." in messages_of(response)
    assert DryRunRecord.objects.filter(campaign=campaign).count() == 2


def test_send_test_page_sends_one_marked_message_and_records_it(admin_client) -> None:
    campaign = CampaignFactory()
    step = SequenceStepFactory(campaign=campaign)
    with RecordingSmtpServer() as server:
        account = SenderAccountFactory(smtp_port=server.port)
        CampaignAccountFactory(campaign=campaign, account=account)
        page_url = url(Campaign, "send_test", campaign.pk)
        form_page = admin_client.get(page_url)
        assert form_page.status_code == 200 and 'name="to_email"' in form_page.content.decode()
        response = admin_client.post(
            page_url, {"step": step.pk, "to_email": "me@operator.test", "account": account.pk}, follow=True
        )
        mails = server.snapshot()
    assert response.redirect_chain[-1][0] == url(Campaign, "change", campaign.pk)
    assert len(mails) == 1 and mails[0].rcpt_tos == ("me@operator.test",)
    assert b"Subject: [TEST] " in mails[0].content
    test = OperatorTestSend.objects.get()
    assert test.sent_at is not None and test.to_email == "me@operator.test"
    assert any("sent to me@operator.test" in message for message in messages_of(response))


def test_send_test_page_reports_a_failed_send_and_rejects_bad_input(admin_client) -> None:
    campaign = CampaignFactory()
    step = SequenceStepFactory(campaign=campaign)
    other_step = SequenceStepFactory()
    account = SenderAccountFactory(smtp_port=free_port())
    page_url = url(Campaign, "send_test", campaign.pk)
    bad = admin_client.post(page_url, {"step": other_step.pk, "to_email": "not-an-address", "account": account.pk})
    assert bad.status_code == 200 and OperatorTestSend.objects.count() == 0
    assert set(bad.context["form"].errors) == {"step", "to_email"}

    response = admin_client.post(
        page_url, {"step": step.pk, "to_email": "me@operator.test", "account": account.pk}, follow=True
    )
    [message] = response.context["messages"]
    assert message.level_tag == "error" and "failed: connect" in str(message)
    assert OperatorTestSend.objects.get().error
    assert admin_client.get(url(Campaign, "send_test", 999999)).status_code == 404


# --- leads and suppressions ---------------------------------------------------------------------------------


def test_lead_actions_stop_and_reset_progress(admin_client) -> None:
    lead = LeadFactory(current_step=2)
    changelist = url(Lead, "changelist")
    response = admin_client.post(changelist, {"action": "stop", "_selected_action": [lead.pk]}, follow=True)
    lead.refresh_from_db()
    assert (lead.state, lead.next_due_at) == (Lead.State.STOPPED, None)
    assert "1 lead(s) stopped." in messages_of(response)
    admin_client.post(changelist, {"action": "reset_progress", "_selected_action": [lead.pk]})
    lead.refresh_from_db()
    assert (lead.state, lead.current_step) == (Lead.State.IN_PROGRESS, 1) and lead.next_due_at is not None


def test_leads_are_searchable_by_recipient_email(admin_client) -> None:
    wanted = RecipientFactory(email="needle@haystack.example").lead
    other = RecipientFactory().lead
    page = admin_client.get(url(Lead, "changelist"), {"q": "needle@haystack"}).content.decode()
    assert url(Lead, "change", wanted.pk) in page and url(Lead, "change", other.pk) not in page


def test_suppression_add_normalizes_through_the_service_and_rejects_garbage(admin_client) -> None:
    response = admin_client.post(url(Suppression, "add"), {"value": "  @Example.COM ", "reason": "asked"})
    assert response.status_code == 302
    assert Suppression.objects.get().value == "example.com"
    assert Suppression.objects.get().kind == Suppression.Kind.DOMAIN
    bad = admin_client.post(url(Suppression, "add"), {"value": "not a domain!", "reason": ""})
    assert bad.status_code == 200 and "neither an email address nor a domain" in bad.content.decode()


def test_adding_a_lead_creates_it_through_the_service_due_now_with_its_recipients(now, admin_client) -> None:
    campaign = CampaignFactory()
    inline = {"recipients-TOTAL_FORMS": "1", "recipients-INITIAL_FORMS": "0", "recipients-MIN_NUM_FORMS": "0",
              "recipients-MAX_NUM_FORMS": "1000", "recipients-0-position": "0", "recipients-0-email": "ann@x.example",
              "recipients-0-status": "not_contacted"}  # fmt: skip
    data = {"campaign": campaign.pk, "external_id": "added", "custom_fields": '{"tier": "gold"}', **inline}
    assert admin_client.post(url(Lead, "add"), data).status_code == 302
    lead = Lead.objects.get()
    assert (lead.external_id, lead.custom_fields, lead.state, lead.current_step, lead.next_due_at) == (
        "added", {"tier": "gold"}, Lead.State.IN_PROGRESS, 1, NOW,
    )  # fmt: skip
    assert list(lead.recipients.values_list("email", flat=True)) == ["ann@x.example"]
