"""The campaigns JSON API under /api/v1/: staff only, passwords write-only, bad input is a 400 (never a 500)."""

from datetime import datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db.models import TextField
from django.db.models.functions import Cast
from rest_framework.test import APIClient

from campaigns.models import Activity, Campaign, Lead, Recipient, SenderAccount, SendRecord
from campaigns.tests.conftest import NOW
from campaigns.tests.factories import (
    ActivityFactory,
    CampaignAccountFactory,
    CampaignFactory,
    LeadFactory,
    RecipientFactory,
    SenderAccountFactory,
    SendRecordFactory,
    SequenceStepFactory,
)
from emailsys import clock
from emailsys.testing import api_authorization

pytestmark = pytest.mark.django_db

PASSWORD = "Sup3r-Secret-SMTP-pw!"


@pytest.fixture
def now(monkeypatch) -> datetime:
    monkeypatch.setattr(clock, "now", lambda: NOW)
    return NOW


@pytest.fixture
def api(admin_user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=api_authorization(admin_user))
    return client


def ciphertext(account_id: int) -> str:
    raw = SenderAccount.objects.annotate(raw=Cast("smtp_password", output_field=TextField()))
    return raw.values_list("raw", flat=True).get(pk=account_id)


# --- auth and schema ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/api/v1/campaigns/", "/api/v1/leads/", "/api/v1/accounts/", "/api/v1/activities/", "/api/v1/send-records/"],
)
def test_anonymous_gets_401_and_non_staff_gets_403(client, path) -> None:
    assert client.get(path).status_code == 401
    user = get_user_model().objects.create_user("viewer", password="x-unused-pw")
    staffless = APIClient()
    staffless.credentials(HTTP_AUTHORIZATION=api_authorization(user))
    assert staffless.get(path).status_code == 403


def test_schema_lists_the_campaign_paths_next_to_health(admin_client) -> None:
    response = admin_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    paths = response.json()["paths"]
    for path in (
        "/api/v1/health/",
        "/api/v1/campaigns/",
        "/api/v1/campaigns/{id}/progress/",
        "/api/v1/campaigns/{id}/pause/",
        "/api/v1/campaigns/{id}/resume/",
        "/api/v1/leads/",
        "/api/v1/leads/bulk/",
        "/api/v1/accounts/",
        "/api/v1/accounts/{id}/",
        "/api/v1/activities/",
        "/api/v1/send-records/",
        "/api/v1/send-records/{id}/resolve/",
    ):
        assert path in paths, path
    progress = paths["/api/v1/campaigns/{id}/progress/"]["get"]["responses"]["200"]
    assert progress["content"]["application/json"]["schema"]["$ref"].endswith("/CampaignProgress")
    bulk = paths["/api/v1/leads/bulk/"]["post"]
    assert bulk["requestBody"]["content"]["application/json"]["schema"]["type"] == "array"
    assert "400" in bulk["responses"]


# --- campaigns ----------------------------------------------------------------------------------------------


def test_campaign_crud_and_validation_errors_are_400(api) -> None:
    response = api.post("/api/v1/campaigns/", {"name": "Spring", "time_zone": "Europe/Berlin"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["status"], body["lead_count"], body["step_count"]) == ("draft", 0, 0)
    campaign_url = f"/api/v1/campaigns/{body['id']}/"

    for bad, field in [
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        ({"starts_at": "2025-05-01T00:00:00Z", "ends_at": "2025-04-01T00:00:00Z"}, "non_field_errors"),
        ({"send_hour_start": 17, "send_hour_end": 9}, "non_field_errors"),
        ({"send_days": [0, 9]}, "send_days"),
        ({"status": "active"}, None),  # read-only: ignored, status moves through /resume/
    ]:
        response = api.patch(campaign_url, bad, format="json")
        if field is None:
            assert response.status_code == 200 and response.json()["status"] == "draft"
        else:
            assert response.status_code == 400, bad
            assert field in response.json(), response.json()

    assert api.patch(campaign_url, {"batch_size": 5}, format="json").json()["batch_size"] == 5
    assert api.get("/api/v1/campaigns/").json()["count"] == 1
    assert api.delete(campaign_url).status_code == 204
    assert not Campaign.objects.exists()


def test_pause_and_resume_call_the_service_and_explain_refusals(api) -> None:
    campaign = CampaignFactory()
    response = api.post(f"/api/v1/campaigns/{campaign.pk}/resume/", {}, format="json")
    assert response.status_code == 400
    assert "needs at least one sequence step and at least one sender account" in str(response.json())

    SequenceStepFactory(campaign=campaign)
    CampaignAccountFactory(campaign=campaign)
    response = api.post(f"/api/v1/campaigns/{campaign.pk}/resume/", {}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "active"
    response = api.post(f"/api/v1/campaigns/{campaign.pk}/pause/", {"reason": "holiday"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "paused"
    assert Activity.objects.filter(campaign=campaign, message="holiday").exists()
    assert api.post("/api/v1/campaigns/999999/pause/", {}, format="json").status_code == 404


def test_progress_endpoint_numbers(now, api) -> None:
    campaign = CampaignFactory(time_zone="UTC")
    step = SequenceStepFactory(campaign=campaign)
    LeadFactory.create_batch(2, campaign=campaign, current_step=1)
    LeadFactory(campaign=campaign, state=Lead.State.STOPPED, current_step=2)
    finished = LeadFactory(campaign=campaign, state=Lead.State.FINISHED, current_step=2)
    today = RecipientFactory(lead=finished, status=Recipient.Status.CONTACTED)
    yesterday = RecipientFactory(lead=finished, status=Recipient.Status.CONTACTED)
    SendRecordFactory(recipient=today, step=step, state="sent", sent_at=NOW - timedelta(hours=1))
    SendRecordFactory(recipient=yesterday, step=step, state="sent", sent_at=NOW - timedelta(days=1))
    SendRecordFactory(recipient=RecipientFactory(lead=finished), step=step, state="unknown")

    response = api.get(f"/api/v1/campaigns/{campaign.pk}/progress/")
    assert response.status_code == 200
    body = response.json()
    assert body["campaign"] == campaign.pk and body["status"] == "draft"
    assert body["leads"] == {"total": 4, "in_progress": 2, "finished": 1, "stopped": 1}
    assert body["leads_by_step"] == {"1": 2, "2": 2}
    assert body["recipients"]["contacted"] == 2 and body["recipients"]["not_contacted"] == 1
    assert body["send_records"]["sent"] == 2 and body["send_records"]["unknown"] == 1
    assert body["sent_today"] == 1


# --- leads --------------------------------------------------------------------------------------------------


def lead_item(campaign: Campaign, external_id: str, *emails: str, **extra) -> dict:
    recipients = [{"email": email, "first_name": email.split("@")[0].title()} for email in emails]
    return {"campaign": campaign.pk, "external_id": external_id, "recipients": recipients, **extra}


def test_bulk_create_makes_every_lead_with_its_recipients_due_now(now, api, django_assert_max_num_queries) -> None:
    campaign = CampaignFactory()
    items = [
        lead_item(campaign, f"lead-{index}", f"a{index}@x.example", f"B{index}@X.example", custom_fields={"n": index})
        for index in range(50)
    ]
    with django_assert_max_num_queries(12):
        response = api.post("/api/v1/leads/bulk/", items, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert [lead["external_id"] for lead in body] == [f"lead-{index}" for index in range(50)]
    assert [r["email"] for r in body[7]["recipients"]] == ["a7@x.example", "b7@x.example"]
    assert [r["position"] for r in body[7]["recipients"]] == [0, 1]
    assert Lead.objects.filter(campaign=campaign, next_due_at=NOW, state="in_progress", current_step=1).count() == 50
    assert Recipient.objects.filter(lead__campaign=campaign).count() == 100
    assert Lead.objects.get(external_id="lead-3").custom_fields == {"n": 3}


def test_bulk_create_is_all_or_nothing_with_errors_per_item(api) -> None:
    campaign = CampaignFactory()
    LeadFactory(campaign=campaign, external_id="taken")
    items = [
        lead_item(campaign, "ok-1", "one@x.example"),
        lead_item(campaign, "bad-email", "not-an-email"),
        lead_item(campaign, "ok-2", "two@x.example"),
        lead_item(campaign, "taken", "three@x.example"),
        lead_item(campaign, "ok-1", "four@x.example"),
        {"campaign": 999999, "external_id": "nowhere", "recipients": [{"email": "five@x.example"}]},
        lead_item(campaign, "twice", "same@x.example", "SAME@x.example"),
        lead_item(campaign, "nobody"),
        "not an object",
    ]
    response = api.post("/api/v1/leads/bulk/", items, format="json")
    assert response.status_code == 400
    body = response.json()
    assert "nothing was created" in body["detail"]
    errors = {item["index"]: item["errors"] for item in body["errors"]}
    assert sorted(errors) == [1, 3, 4, 5, 6, 7, 8]
    assert "email" in errors[1]["recipients"]["0"]
    assert "exists in this campaign" in errors[3]["external_id"][0]
    assert "index 0" in errors[4]["external_id"][0]
    assert "campaign" in errors[5]
    assert list(errors[6]["recipients"]) == ["1"] and "already listed" in errors[6]["recipients"]["1"]["email"][0]
    assert "recipients" in errors[7]
    assert "non_field_errors" in errors[8]
    assert Lead.objects.count() == 1 and Recipient.objects.count() == 0


@pytest.mark.parametrize(
    ("payload", "expected"),
    [({"campaign": 1}, "JSON list"), ([], "empty"), ([{}] * 1001, "At most 1000")],
)
def test_bulk_create_refuses_a_body_that_is_not_a_list_of_leads(api, payload, expected) -> None:
    response = api.post("/api/v1/leads/bulk/", payload, format="json")
    assert response.status_code == 400 and expected in response.json()["detail"]


def test_single_lead_create_list_and_filters(now, api) -> None:
    campaign = CampaignFactory()
    response = api.post("/api/v1/leads/", lead_item(campaign, "solo", "Solo@X.example"), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["recipients"][0]["email"] == "solo@x.example" and body["next_due_at"] == "2025-03-10T12:00:00Z"

    again = api.post("/api/v1/leads/", lead_item(campaign, "solo", "other@x.example"), format="json")
    assert again.status_code == 400 and "external_id" in again.json()
    assert api.post("/api/v1/leads/", {"campaign": "x", "recipients": []}, format="json").status_code == 400

    LeadFactory(campaign=campaign, state=Lead.State.STOPPED)
    LeadFactory()
    listed = api.get("/api/v1/leads/", {"campaign": campaign.pk, "state": "in_progress"}).json()
    assert [lead["external_id"] for lead in listed["results"]] == ["solo"]
    assert api.get(f"/api/v1/leads/{body['id']}/").json()["recipients"][0]["email"] == "solo@x.example"
    assert api.get("/api/v1/leads/", {"state": "asleep"}).status_code == 400
    assert api.get("/api/v1/leads/", {"campaign": "abc"}).status_code == 400


# --- accounts -----------------------------------------------------------------------------------------------


def test_the_smtp_password_never_appears_in_any_account_response(api) -> None:
    payload = {"email": "sales@emailsys.test", "smtp_host": "smtp.example", "smtp_username": "sales",
               "smtp_password": PASSWORD, "time_zone": "Europe/Berlin"}  # fmt: skip
    responses = [api.post("/api/v1/accounts/", payload, format="json")]
    assert responses[0].status_code == 201
    account_id = responses[0].json()["id"]
    stored = ciphertext(account_id)
    assert SenderAccount.objects.get().smtp_password == PASSWORD

    account_url = f"/api/v1/accounts/{account_id}/"
    responses += [
        api.get("/api/v1/accounts/"),
        api.get(account_url),
        api.patch(account_url, {"daily_limit": 10}, format="json"),
        api.patch(account_url, {"smtp_password": ""}, format="json"),
        api.put(account_url, {**payload, "smtp_password": None, "email": "bad"}, format="json"),
        api.post(f"{account_url}pause/", {}, format="json"),
        api.post(f"{account_url}resume/", {}, format="json"),
        api.get("/api/v1/accounts/", HTTP_ACCEPT="text/html"),
    ]
    for response in responses:
        assert PASSWORD.encode() not in response.content
        assert stored.encode() not in response.content
        assert b"smtp_password" not in response.content or response.status_code == 400
    assert responses[1].json()["results"][0]["has_password"] is True
    assert responses[5].status_code == 400  # nothing changed by the bad PUT
    assert responses[-1].status_code == 200 and responses[-1]["Content-Type"] == "application/json"
    assert SenderAccount.objects.get().smtp_password == PASSWORD  # omitted and "" keep it


def test_a_new_password_replaces_the_old_one_and_null_removes_it(api) -> None:
    account = SenderAccountFactory(smtp_password=PASSWORD)
    account_url = f"/api/v1/accounts/{account.pk}/"
    assert api.patch(account_url, {"smtp_password": "brand-new"}, format="json").json()["has_password"] is True
    assert SenderAccount.objects.get().smtp_password == "brand-new"
    assert api.patch(account_url, {"smtp_password": None}, format="json").json()["has_password"] is False
    assert not SenderAccount.objects.get().smtp_password and ciphertext(account.pk) == ""


def test_account_status_moves_through_actions_and_deleting_a_used_account_is_409(api) -> None:
    account = SenderAccountFactory()
    response = api.post(f"/api/v1/accounts/{account.pk}/pause/", {}, format="json")
    assert response.json()["status"] == "paused" and "via the API" in response.json()["status_reason"]
    assert api.patch(f"/api/v1/accounts/{account.pk}/", {"status": "active"}, format="json").json()["status"] == (
        "paused"
    )
    record = SendRecordFactory(account=account)
    response = api.delete(f"/api/v1/accounts/{account.pk}/")
    assert response.status_code == 409 and "cannot be deleted" in response.json()["detail"]
    assert api.delete(f"/api/v1/campaigns/{record.campaign_id}/").status_code == 409
    assert api.post("/api/v1/accounts/", {"email": "x@y.example"}, format="json").status_code == 400


# --- activity and sends -------------------------------------------------------------------------------------


def test_activities_filter_by_campaign_kind_and_account(api) -> None:
    campaign = CampaignFactory()
    account = SenderAccountFactory()
    wanted = ActivityFactory(campaign=campaign, account=account, kind=Activity.Kind.SENT)
    ActivityFactory(campaign=campaign, account=account, kind=Activity.Kind.FAILED)
    ActivityFactory(kind=Activity.Kind.SENT)
    query = {"campaign": campaign.pk, "kind": "sent", "account": account.pk}
    assert [row["id"] for row in api.get("/api/v1/activities/", query).json()["results"]] == [wanted.pk]
    assert api.get("/api/v1/activities/").json()["count"] == 3
    assert api.get("/api/v1/activities/", {"kind": "exploded"}).status_code == 400
    assert api.post("/api/v1/activities/", {}, format="json").status_code == 405


def test_send_records_filter_unknown_show_the_message_in_detail_and_resolve(api, admin_user) -> None:
    unknown = SendRecordFactory(state=SendRecord.State.UNKNOWN, message="MIME body here")
    sent = SendRecordFactory(state=SendRecord.State.SENT)
    listed = api.get("/api/v1/send-records/", {"state": "unknown"}).json()["results"]
    assert [row["id"] for row in listed] == [unknown.pk] and "message" not in listed[0]
    assert api.get(f"/api/v1/send-records/{unknown.pk}/").json()["message"] == "MIME body here"

    response = api.post(f"/api/v1/send-records/{unknown.pk}/resolve/", {"action": "mark_failed"}, format="json")
    assert response.status_code == 200 and response.json()["state"] == "failed"
    assert response.json()["resolved_by"] == admin_user.username
    refused = api.post(f"/api/v1/send-records/{sent.pk}/resolve/", {"action": "mark_failed"}, format="json")
    assert refused.status_code == 409 and "not unknown" in refused.json()["detail"]
    bad = api.post(f"/api/v1/send-records/{sent.pk}/resolve/", {"action": "shrug"}, format="json")
    assert bad.status_code == 400


def test_resend_via_the_api_enqueues_after_commit(api, django_capture_on_commit_callbacks) -> None:
    unknown = SendRecordFactory(state=SendRecord.State.UNKNOWN)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api.post(f"/api/v1/send-records/{unknown.pk}/resolve/", {"action": "resend"}, format="json")
    assert response.status_code == 200 and response.json()["state"] == "deferred"
    # One enqueue (the other callbacks announce the change to live pages, emailsys.live).
    assert len([callback for callback in callbacks if "campaigns.send_resend" in repr(callback)]) == 1
