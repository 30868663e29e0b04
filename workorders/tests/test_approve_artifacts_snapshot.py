"""What the live pages and the API build on: Approve through the API, the artifacts (dry-run list, prepared emails)
served from storage with the view permission, the live snapshot (in three queries), and the work-order metrics
on /metrics. Real PostgreSQL, Redis and aiosmtpd; the pipeline runs in this process up to the review gate."""

import csv
import email
import io

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from emailsys.ops_clients import ops_redis
from emailsys.testing import api_authorization
from workorders.metrics import STEP_METRICS_KEY
from workorders.models import WorkOrder
from workorders.selectors import workorder_snapshot
from workorders.services.lifecycle import workorder_approve
from workorders.services.mailings import NAME_MARKER
from workorders.services.steps import workorder_run
from workorders.tests.test_steps import audience, make_work_order

pytestmark = pytest.mark.django_db(transaction=True)
TESTER = "tester@example.test"


def user_with(role: str | None, name: str):
    user = get_user_model().objects.create_user(name, is_staff=True)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def api_as(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=api_authorization(user))
    return client


def session_as(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def gated(smtp) -> WorkOrder:
    """A work order stopped at the review gate: Count, Prepare, Dry-Run and Test done (en and fr)."""
    audience(en=2, fr=1)
    work_order = make_work_order(smtp, auto_approve=False, testers=[TESTER], reply_to="team@example.test")
    assert workorder_run(work_order_id=work_order.id) == "awaiting_approval"
    return work_order


def test_approve_through_the_api_needs_the_approve_permission_and_the_state(gated, smtp):
    url = f"/api/v1/workorders/{gated.id}/approve/"
    viewer = api_as(user_with("viewer", "v"))
    assert viewer.post(url).status_code == 403
    assert WorkOrder.objects.get(id=gated.id).status == "awaiting_approval"

    operator = user_with("operator", "o")
    response = api_as(operator).post(url)
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["approved_by"], body["auto_approve"]) == ("queued", operator.id, False)
    assert body["approved_at"] and body["live_version"] == WorkOrder.objects.get(id=gated.id).live_version

    again = api_as(operator).post(url)
    assert again.status_code == 409
    assert "only a work order awaiting approval" in again.json()["detail"]
    assert api_as(operator).post("/api/v1/workorders/999999/approve/").status_code == 404


def test_auto_approve_is_writable_through_the_api_and_approval_fields_are_not(smtp):
    from workorders.tests.test_lifecycle_api_admin import work_order_payload

    client = api_as(user_with("admin", "a"))
    payload = work_order_payload(auto_approve=True, approved_at="2026-01-01T00:00:00Z", status="complete")
    response = client.post("/api/v1/workorders/", payload, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["auto_approve"], body["approved_at"], body["status"]) == (True, None, "ready")


def test_artifacts_are_listed_and_served_from_storage_through_the_api(gated):
    client = api_as(user_with("viewer", "v"))
    listed = client.get(f"/api/v1/workorders/{gated.id}/artifacts/")
    assert listed.status_code == 200, listed.content
    rows = listed.json()
    assert [(row["name"], row["content_type"], row["language"]) for row in rows] == [
        ("dry-run.csv", "text/csv", ""),
        ("prepared-en.eml", "message/rfc822", "en"),
        ("prepared-fr.eml", "message/rfc822", "fr"),
    ]

    inline = client.get(rows[0]["url"])
    assert inline.status_code == 200 and inline["Content-Type"] == "text/plain; charset=utf-8"
    assert inline["Content-Disposition"] == 'inline; filename="dry-run.csv"'
    lines = list(csv.reader(io.StringIO(inline.content.decode())))
    assert lines[0] == ["email", "name", "language", "suppressed"] and len(lines) == 4

    download = client.get(rows[1]["url"] + "?download=1")
    assert download["Content-Type"] == "message/rfc822"
    assert download["Content-Disposition"] == 'attachment; filename="prepared-en.eml"'
    message = email.message_from_bytes(download.content)
    assert message["Subject"] == gated.event.name and message["Reply-To"] == "team@example.test"
    assert NAME_MARKER in message.get_payload(decode=True).decode()

    for name in ("nope.csv", "..%2F..%2Fdry-run.csv", "prepared-de.eml", ".."):
        assert client.get(f"/api/v1/workorders/{gated.id}/artifacts/{name}/").status_code == 404, name
    assert api_as(user_with(None, "s")).get(rows[0]["url"]).status_code == 403  # staff without view permission
    assert APIClient().get(rows[0]["url"]).status_code == 401


def test_artifacts_open_in_the_admin_with_the_view_permission_only(gated):
    url = reverse("workorder-artifact", args=[gated.id, "dry-run.csv"])
    assert url == f"/admin/workorders/workorder/{gated.id}/artifacts/dry-run.csv"

    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/")
    assert session_as(user_with(None, "staff-only")).get(url).status_code == 403

    viewer = session_as(user_with("viewer", "v"))
    inline = viewer.get(url)
    assert inline.status_code == 200 and inline["Content-Type"] == "text/plain; charset=utf-8"
    assert inline.content.decode().startswith("email,name,language,suppressed")
    download = viewer.get(url + "?download=1")
    assert (download["Content-Type"], download["Content-Disposition"]) == (
        "text/csv", 'attachment; filename="dry-run.csv"',
    )  # fmt: skip
    prepared = viewer.get(reverse("workorder-artifact", args=[gated.id, "prepared-fr.eml"]))
    assert "Content-Language: fr" in prepared.content.decode()

    for name in ("secret.txt", "..", "dry-run.csv..", "prepared-de.eml"):
        assert viewer.get(f"/admin/workorders/workorder/{gated.id}/artifacts/{name}").status_code == 404, name
    # A slash never reaches the view (the name is one path segment): the admin's catch-all answers, no file.
    traversal = viewer.get(f"/admin/workorders/workorder/{gated.id}/artifacts/..%2F..%2Fdry-run.csv", follow=True)
    assert b"email,name,language,suppressed" not in traversal.content
    assert viewer.get("/admin/workorders/workorder/999999/artifacts/dry-run.csv").status_code == 404
    assert viewer.post(url).status_code == 405


def test_the_snapshot_has_what_the_change_page_shows_in_three_queries(gated, admin_user, django_assert_num_queries):
    with django_assert_num_queries(3):
        data = workorder_snapshot(work_order_id=gated.id)

    assert (data["label"], data["status"], data["status_label"]) == (
        str(gated), "awaiting_approval", "Awaiting approval",
    )  # fmt: skip
    assert (data["auto_approve"], data["approved_at"], data["approved_by"], data["lock_owner"]) == (
        False, None, None, "",
    )  # fmt: skip
    assert data["counts"] == {"by_language": {"en": 2, "fr": 1}, "other_languages": 0, "already_sent": 0}
    steps = {step["name"]: step for step in data["steps"]}
    assert (steps["dry_run"]["label"], steps["dry_run"]["status_label"]) == ("Dry-Run", "Complete")
    assert steps["test"]["started_at"] and steps["test"]["ended_at"]
    assert steps["send"]["message"].startswith("awaiting approval")
    assert steps["send"]["rate_per_second"] is None and steps["send"]["eta_seconds"] is None
    assert data["artifacts"]["dry_run"] == {
        "name": "dry-run.csv", "url": f"/admin/workorders/workorder/{gated.id}/artifacts/dry-run.csv",
    }  # fmt: skip
    assert [p["language"] for p in data["artifacts"]["prepared"]] == ["en", "fr"]
    assert [(s["email"], s["language"], s["state"]) for s in data["test_sends"]] == [
        (TESTER, "en", "sent"), (TESTER, "fr", "sent"),
    ]  # fmt: skip
    assert data["test_sends"][0]["subject"] == f"[TEST] {gated.event.name}"
    assert data["test_sends"][0]["record_url"].startswith("/admin/workorders/mailingsend/")
    import json

    json.dumps(data)  # JSON-able as it is

    workorder_approve(work_order_id=gated.id, approved_by=admin_user)
    approved = workorder_snapshot(work_order_id=gated.id)
    assert approved["approved_by"] == "admin" and approved["approved_at"]
    assert workorder_snapshot(work_order_id=999999) is None


def test_a_working_steps_rate_and_eta(gated):
    from datetime import timedelta

    from emailsys import clock
    from workorders.models import WorkOrderStep

    WorkOrderStep.objects.filter(work_order=gated, name="send").update(
        status="working", started_at=clock.now() - timedelta(seconds=10), done=50, total=150
    )
    send = next(s for s in workorder_snapshot(work_order_id=gated.id)["steps"] if s["name"] == "send")
    assert 4.5 < send["rate_per_second"] <= 5.0
    assert 19 < send["eta_seconds"] < 23


def scrape(client: Client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_step_durations_and_work_orders_by_status_on_metrics(smtp, client):
    ops_redis().delete(STEP_METRICS_KEY)
    audience(en=1, fr=0)
    work_order = make_work_order(smtp, auto_approve=False, subjects={"en": ""})
    workorder_run(work_order_id=work_order.id)

    samples = scrape(client)
    for step in ("count", "prepare", "dry_run", "test"):
        assert samples[("emailsys_workorder_step_duration_seconds_count", (("step", step),))] == 1, step
        assert samples[("emailsys_workorder_step_duration_seconds_bucket", (("le", "+Inf"), ("step", step)))] == 1
        assert 0 <= samples[("emailsys_workorder_step_duration_seconds_sum", (("step", step),))] < 30
    assert ("emailsys_workorder_step_duration_seconds_count", (("step", "send"),)) not in samples  # not run yet
    assert samples[("emailsys_workorders", (("status", "awaiting_approval"),))] == 1
    assert samples[("emailsys_workorders", (("status", "complete"),))] == 0

    workorder_approve(work_order_id=work_order.id, approved_by=None)
    workorder_run(work_order_id=work_order.id)
    samples = scrape(client)
    assert samples[("emailsys_workorder_step_duration_seconds_count", (("step", "send"),))] == 1
    assert samples[("emailsys_workorders", (("status", "complete"),))] == 1
    assert samples[("emailsys_workorders", (("status", "awaiting_approval"),))] == 0
