"""Forms a person can fill (emailsys.forms) through the admin's own pages: durations, weekdays, time zones,
repeatable rows, a segment's live count, a template's live preview; readable titles; why nothing is sent."""

import re
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.urls import reverse

from campaigns.models import Campaign, EmailTemplate, Lead, SequenceStep
from campaigns.tests.factories import (
    CampaignAccountFactory,
    CampaignFactory,
    EmailTemplateFactory,
    LeadFactory,
    RecipientFactory,
    SendRecordFactory,
    SequenceStepFactory,
)
from emailsys import clock
from emailsys.forms import duration_format, duration_parse
from workorders.models import WorkOrder
from workorders.tests.factories import ContactFactory, WorkOrderFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2d 4h", 187200), ("90m", 5400), ("45s", 45), ("1h30m", 5400), ("240", 240), (" 1D, 2H ", 93600), ("0", 0)],
)
def test_durations_parse(text: str, seconds: int) -> None:
    assert duration_parse(text) == seconds


@pytest.mark.parametrize("text", ["2 days", "4h 2d 4h", "h", "-5m", "1.5h", "soon"])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match="d, h, m|duration"):
        duration_parse(text)


def test_durations_are_shown_as_typed() -> None:
    assert [duration_format(s) for s in (187200, 5400, 90, 0, 3600)] == ["2d 4h", "1h 30m", "1m 30s", "0s", "1h"]
    assert all(duration_parse(duration_format(s)) == s for s in (1, 59, 61, 86399, 86400 * 9 + 7))


def campaign_form(campaign: Campaign, **changes) -> dict:
    step = campaign.steps.get()
    data = {
        "name": campaign.name, "starts_at_0": "", "starts_at_1": "", "ends_at_0": "", "ends_at_1": "",
        "time_zone": campaign.time_zone, "send_hour_start": "", "send_hour_end": "", "batch_size": 20,
        "sender_policy": "sticky", "stop_on_reply": "on",
        "account_settings-TOTAL_FORMS": 0, "account_settings-INITIAL_FORMS": 0,
        "steps-TOTAL_FORMS": 1, "steps-INITIAL_FORMS": 1, "steps-0-id": step.pk, "steps-0-campaign": campaign.pk,
        "steps-0-order": 1, "steps-0-delay_seconds": "0", "steps-0-template": step.template_id,
    }  # fmt: skip
    data.update(changes)
    return data


def test_a_campaign_takes_weekdays_durations_and_a_zone_and_shows_them_back(admin_client) -> None:
    campaign = CampaignFactory(name="Spring outreach")
    SequenceStepFactory(campaign=campaign)
    url = reverse("admin:campaigns_campaign_change", args=[campaign.pk])

    page = admin_client.get(url).content.decode()
    assert 'type="checkbox" name="send_days" value="0"' in page and 'data-searchable="time zone"' in page

    data = campaign_form(
        campaign, send_days=["4", "0", "2"], time_zone="Asia/Kolkata", **{"steps-0-delay_seconds": "2d 4h"}
    )
    assert admin_client.post(url, data).status_code == 302
    campaign.refresh_from_db()
    assert (campaign.send_days, campaign.time_zone) == ([0, 2, 4], "Asia/Kolkata")
    assert SequenceStep.objects.get(campaign=campaign).delay_seconds == 187200
    page = admin_client.get(url).content.decode()
    assert 'value="2d 4h"' in page
    assert re.search(r'name="send_days" value="4"[^>]* checked', page)
    assert not re.search(r'name="send_days" value="1"[^>]* checked', page)

    bad = admin_client.post(
        url, campaign_form(campaign, time_zone="Mars/Olympus", **{"steps-0-delay_seconds": "2 days"})
    )
    assert bad.status_code == 200
    shown = bad.content.decode()
    assert "is not a duration" in shown and "not a known time zone" in shown and 'value="2 days"' in shown
    assert SequenceStep.objects.get(campaign=campaign).delay_seconds == 187200  # nothing stored is lost


def test_a_work_order_takes_subjects_and_testers_as_rows(admin_client) -> None:
    order = WorkOrderFactory(subjects={"en": "Join us"}, testers=["a@example.test"])
    url = reverse("admin:workorders_workorder_change", args=[order.pk])
    page = admin_client.get(url).content.decode()
    assert 'name="subjects_language" value="en"' in page and 'name="testers_item" value="a@example.test"' in page

    form = {
        "event": order.event_id, "sub_event": "", "stage": order.stage, "audience": order.audience_id,
        "account": order.account_id, "template": order.template_id, "from_name": "", "reply_to": "",
        "salutation_by_name": "on", "send_until_0": "", "send_until_1": "", "send_interval_seconds": "1h",
        "burst_size": 0, "burst_pause_seconds": "0",
        "subjects_language": ["en", "FR", ""], "subjects_text": ["Join us", "Rejoignez-nous", ""],
        "testers_item": ["a@example.test", "", "b@example.test"],
    }  # fmt: skip
    assert admin_client.post(url, form).status_code == 302
    order.refresh_from_db()
    assert order.subjects == {"en": "Join us", "fr": "Rejoignez-nous"}
    assert order.testers == ["a@example.test", "b@example.test"] and order.send_interval_seconds == 3600

    bad = admin_client.post(url, {**form, "testers_item": ["not-an-address"], "subjects_language": ["English"]})
    assert bad.status_code == 200
    assert "Not email addresses" in bad.content.decode() and "Not a language code" in bad.content.decode()
    assert WorkOrder.objects.get(pk=order.pk).testers == ["a@example.test", "b@example.test"]


def test_a_segment_rule_is_counted_as_typed_with_permissions(client, admin_client, django_user_model) -> None:
    ContactFactory(language="fr", email="ana@example.test")
    ContactFactory(language="fr", email="bob@example.test")
    ContactFactory(language="en")
    url = reverse("admin:workorders_segment_count")

    answer = admin_client.post(url, {"rule": '{"language": ["fr"]}', "slug": "french"})
    assert answer.json() == {"count": 2, "sample": ["ana@example.test", "bob@example.test"]}
    bad = admin_client.post(url, {"rule": '{"language": ["fr"]', "slug": ""})
    assert bad.status_code == 400 and "Not valid JSON" in bad.json()["errors"][0]
    unknown = admin_client.post(url, {"rule": '{"in_segment": "nobody"}', "slug": ""})
    assert unknown.status_code == 400 and "nobody" in " ".join(unknown.json()["errors"])
    assert admin_client.get(url).status_code == 405

    viewer = django_user_model.objects.create_user("seg-viewer", is_staff=True)
    client.force_login(viewer)
    assert client.post(url, {"rule": '{"always": true}'}).status_code == 403
    viewer.user_permissions.add(Permission.objects.get(codename="view_segment"))
    assert client.post(url, {"rule": '{"always": true}'}).json() == {"count": 3, "sample": []}  # no contact view


def test_a_template_is_previewed_as_typed_and_errors_are_answers(admin_client) -> None:
    url = reverse("admin:campaigns_emailtemplate_preview")
    good = admin_client.post(url, {"subject": "Hi {{ first_name }}", "body_text": "Dear {{ first_name }},\nbye"})
    assert good.status_code == 200 and good.json()["subject"].startswith("Hi ") and "Dear " in good.json()["text"]
    for body in ("{{ name | nosuchfilter }}", "{% for x in %}", "{{ 'x' * 100000000 }}"):
        bad = admin_client.post(url, {"subject": "Hi", "body_text": body})
        assert bad.status_code == 400 and bad.json()["error"], body
    assert admin_client.post(url, {"subject": "Hi"}).json() == {"error": "Write a text or an HTML body."}
    template = EmailTemplateFactory()
    page = admin_client.get(reverse("admin:campaigns_emailtemplate_change", args=[template.pk])).content.decode()
    assert f'data-preview-url="{url}"' in page


def test_titles_read_like_a_product() -> None:
    campaign = CampaignFactory(name="Spring outreach")
    recipient = RecipientFactory(lead__campaign=campaign, company_name="Acme", email="maria@acme.test")
    setting = CampaignAccountFactory(campaign=campaign, account__email="maria@emailsys.test")
    record = SendRecordFactory(
        recipient=recipient, step=SequenceStepFactory(campaign=campaign), account=setting.account
    )
    lead = recipient.lead
    assert str(lead) == f"Acme (lead {lead.pk}, Spring outreach)"
    assert str(setting) == "maria@emailsys.test via Spring outreach"
    assert str(record).startswith("maria@acme.test via Spring outreach, step 1")
    assert str(Lead(campaign=campaign, external_id="x-1")) == "x-1 (Spring outreach)"


def test_show_due_leads_and_the_campaign_page_say_when_the_next_send_is(admin_client) -> None:
    now = clock.now()
    campaign = CampaignFactory(name="Weekend", status=Campaign.Status.ACTIVE, send_days=[(now.weekday() + 2) % 7])
    CampaignAccountFactory(campaign=campaign)
    LeadFactory(campaign=campaign, next_due_at=now + timedelta(hours=1))
    out = StringIO()
    call_command("show_due_leads", "--campaign-id", str(campaign.pk), stdout=out)
    text = out.getvalue()
    assert "Found 0 due leads." in text and "Next send:" in text
    assert "No lead is due yet" in text and "Outside the send window" in text
    page = admin_client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk])).content.decode()
    assert 'id="next-send"' in page and "Outside the send window" in page

    paused = CampaignFactory(status=Campaign.Status.PAUSED)
    out = StringIO()
    call_command("show_due_leads", "--campaign-id", str(paused.pk), stdout=out)
    assert "not scheduled" in out.getvalue() and "activate it" in out.getvalue()


def test_operator_lists_filter_by_campaign_status_account_and_date(admin_client) -> None:
    record = SendRecordFactory(recipient__company_name="Acme", account=CampaignAccountFactory().account)
    campaign, account = record.campaign, record.account
    lists = {
        "campaigns_lead": {"campaign__id__exact": campaign.pk, "sender_account__id__exact": account.pk, "q": "Acme"},
        "campaigns_recipient": {"lead__campaign__id__exact": campaign.pk, "status__exact": "not_contacted"},
        "campaigns_sendrecord": {"campaign__id__exact": campaign.pk, "account__id__exact": account.pk,
                                 "created_at__gte": "2000-01-01T00:00:00+00:00", "q": record.recipient.email},
        "campaigns_activity": {"campaign__id__exact": campaign.pk, "created_at__gte": "2000-01-01T00:00:00+00:00"},
        "campaigns_senderaccount": {"campaign_settings__campaign__id__exact": campaign.pk, "status__exact": "active"},
        "workorders_workorder": {"status__exact": "ready", "created_at__gte": "2000-01-01T00:00:00+00:00"},
        "workorders_mailingsend": {"state__exact": "sent", "sent_at__gte": "2000-01-01T00:00:00+00:00"},
        "processing_inboundemail": {"status__exact": "queued", "q": "someone"},
    }  # fmt: skip
    for name, query in lists.items():
        response = admin_client.get(reverse(f"admin:{name}_changelist"), query)
        assert response.status_code == 200, name  # a filter the admin does not know redirects to ?e=1
        assert 'id="changelist-filter"' in response.content.decode(), name
    found = admin_client.get(reverse("admin:campaigns_sendrecord_changelist"),
                             {"account__id__exact": account.pk}).content.decode()  # fmt: skip
    assert record.recipient.email in found


def test_a_campaign_is_built_on_one_page_with_its_templates_written_in_the_steps(admin_client) -> None:
    account = CampaignAccountFactory().account
    existing = EmailTemplateFactory(name="Intro")
    data = {
        "name": "Spring outreach", "starts_at_0": "", "starts_at_1": "", "ends_at_0": "", "ends_at_1": "",
        "time_zone": "Europe/Berlin", "send_days": ["0", "1"], "send_hour_start": "9", "send_hour_end": "17",
        "batch_size": 20, "sender_policy": "sticky", "stop_on_reply": "on",
        "account_settings-TOTAL_FORMS": 1, "account_settings-INITIAL_FORMS": 0,
        "account_settings-0-account": account.pk, "account_settings-0-min_wait_seconds": "5m",
        "steps-TOTAL_FORMS": 2, "steps-INITIAL_FORMS": 0,
        "steps-0-order": 1, "steps-0-delay_seconds": "0", "steps-0-template": existing.pk,
        "steps-1-order": 2, "steps-1-delay_seconds": "3d", "steps-1-template": "",
        "steps-1-new_subject": "Following up, {{ first_name }}", "steps-1-new_body_text": "Any news, {{ first_name }}?",
    }  # fmt: skip
    bad = admin_client.post(reverse("admin:campaigns_campaign_add"), {**data, "steps-1-new_body_text": "{% if %}"})
    assert bad.status_code == 200 and "syntax" in bad.content.decode().lower()
    assert not Campaign.objects.filter(name="Spring outreach").exists()
    assert not EmailTemplate.objects.exclude(pk=existing.pk).exists()
    neither = admin_client.post(reverse("admin:campaigns_campaign_add"), {**data, "steps-1-new_subject": ""})
    assert "Choose a template, or write a new one" in neither.content.decode()

    assert admin_client.post(reverse("admin:campaigns_campaign_add"), data).status_code == 302
    campaign = Campaign.objects.get(name="Spring outreach")
    steps = list(campaign.steps.select_related("template").order_by("order"))
    assert [(s.template.name, s.delay_seconds) for s in steps] == [("Intro", 0), ("Spring outreach — step 2", 259200)]
    assert steps[1].template.body_text == "Any news, {{ first_name }}?"
    assert campaign.account_settings.get().min_wait_seconds == 300
