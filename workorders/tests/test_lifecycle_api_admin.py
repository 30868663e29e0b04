"""Operations through the JSON API and the admin: create, start, stop, restart, unlock; bad input is a 400 (Approve
and the artifacts: test_approve_artifacts_snapshot.py)."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from emailsys.models import OutboxEvent
from workorders.models import WorkOrder, WorkOrderStep
from workorders.services.lifecycle import workorder_start
from workorders.services.state import workorder_steps_create
from workorders.tests.factories import EventFactory, SegmentFactory, WorkOrderFactory

pytestmark = pytest.mark.django_db
Status = WorkOrder.Status


@pytest.fixture
def api(admin_client):
    return admin_client


def work_order_payload(**overrides) -> dict:
    from campaigns.tests.factories import EmailTemplateFactory, SenderAccountFactory

    return {"event": EventFactory(sub_event="w1").id, "stage": "invitation", "audience": SegmentFactory().id,
            "account": SenderAccountFactory().id, "template": EmailTemplateFactory().id,
            "subjects": {"en": "", "fr": "Bonjour"}, "testers": ["t@example.test"], **overrides}  # fmt: skip


def outbox_kinds(work_order_id: int) -> list[str]:
    return list(OutboxEvent.objects.filter(stream="workorder", key=str(work_order_id)).order_by("id")
                .values_list("kind", flat=True))  # fmt: skip


def test_create_makes_the_steps_and_takes_the_events_sub_event(api):
    response = api.post("/api/v1/workorders/", work_order_payload(), content_type="application/json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["sub_event"] == "w1" and body["status"] == "ready"
    assert [step["name"] for step in body["steps"]] == ["count", "prepare", "dry_run", "test", "send"]
    assert api.get(f"/api/v1/workorders/{body['id']}/").json()["id"] == body["id"]
    assert api.get("/api/v1/workorders/").json()["count"] == 1


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [
        ({"subjects": {}}, "subjects", "Enable at least one language"),
        ({"subjects": {"EN!": ""}}, "subjects", "Not a language code"),
        ({"subjects": ["en"]}, "subjects", "Enable at least one language"),
        ({"testers": ["not-an-address"]}, "testers", "Not email addresses"),
        ({"testers": "a@b.c"}, "testers", "JSON list"),
        ({"send_continuously": True}, "send_until", "send until"),
        ({"burst_size": 5}, "burst_pause_seconds", "pause"),
        ({"event": 999999}, "event", "Invalid pk"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, overrides, field, text):
    response = api.post("/api/v1/workorders/", work_order_payload(**overrides), content_type="application/json")

    assert response.status_code == 400, response.content
    assert text in " ".join(response.json()[field]), response.json()


def test_start_stop_restart_unlock_through_the_api(api):
    work_order = WorkOrderFactory()
    workorder_steps_create(work_order=work_order)
    url = f"/api/v1/workorders/{work_order.id}"

    assert api.post(f"{url}/start/").json()["status"] == "queued"
    assert api.post(f"{url}/start/").status_code == 400  # already queued
    assert api.post(f"{url}/restart/", {"step": "send"}, content_type="application/json").status_code == 400
    stopped = api.post(f"{url}/stop/").json()
    assert stopped["stop_requested"] is True and stopped["status"] == "interrupted"  # nobody held it

    response = api.post(f"{url}/restart/", {"step": "prepare"}, content_type="application/json")
    assert response.status_code == 200
    assert response.json()["status"] == "queued" and response.json()["stop_requested"] is False
    assert outbox_kinds(work_order.id) == ["start", "restart"]

    assert api.post(f"{url}/restart/", {"step": "nope"}, content_type="application/json").status_code == 400
    continuous = api.post(f"{url}/restart/", {"step": "send_continuously"}, content_type="application/json")
    assert continuous.status_code == 400 and "not a step" in str(continuous.json())
    WorkOrder.objects.filter(id=work_order.id).update(lock_owner="w", lock_acquired_at=work_order.created_at,
                                                       lock_expires_at=work_order.created_at)  # fmt: skip
    assert api.post(f"{url}/unlock/").json()["lock_owner"] == ""
    assert api.post("/api/v1/workorders/999999/start/").status_code == 404


def test_the_schema_lists_the_work_order_actions(api):
    schema = api.get("/api/schema/").content.decode()
    for action in ("start", "stop", "restart", "approve", "unlock", "artifacts", "artifacts/{name}"):
        assert f"/api/v1/workorders/{{id}}/{action}/" in schema


def admin_url(view: str, *args) -> str:
    return reverse(f"admin:workorders_workorder_{view}", args=args)


def test_admin_pages_show_steps_and_lock(admin_client):
    work_order = WorkOrderFactory()
    workorder_steps_create(work_order=work_order)

    assert admin_client.get(admin_url("changelist")).status_code == 200
    page = admin_client.get(admin_url("change", work_order.id)).content.decode()
    assert "Dry-Run" in page and f'id="workorder-{work_order.id}-panel"' in page  # the live panel (test_live_pages)
    assert admin_client.get(admin_url("add")).status_code == 200


def test_admin_add_creates_the_work_order_with_its_creator_the_events_sub_event_and_its_steps(admin_client):
    form = {**work_order_payload(), "subjects": '{"en": "", "fr": "Bonjour"}', "testers": '["t@example.test"]',
            "salutation_by_name": "on", "send_interval_seconds": 3600, "burst_size": 0, "burst_pause_seconds": 0,
            "steps-TOTAL_FORMS": 0, "steps-INITIAL_FORMS": 0}  # fmt: skip

    response = admin_client.post(admin_url("add"), form)

    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    assert response["Location"] == admin_url("changelist")
    work_order = WorkOrder.objects.get()
    assert work_order.created_by.username == "admin" and work_order.sub_event == "w1"
    assert work_order.subjects == {"en": "", "fr": "Bonjour"} and work_order.status == Status.READY
    assert list(work_order.steps.values_list("name", flat=True)) == ["count", "prepare", "dry_run", "test", "send"]


def test_admin_change_saves_in_place_and_adds_a_step_the_change_needs(admin_client):
    work_order = WorkOrderFactory(stage="invitation")
    workorder_steps_create(work_order=work_order)
    form = {field: getattr(work_order, f"{field}_id") for field in ("event", "audience", "account", "template")}
    form |= {"sub_event": work_order.sub_event, "stage": "reminder", "subjects": '{"en": ""}', "testers": "[]",
             "send_continuously": "on", "send_until_0": "2999-01-01", "send_until_1": "00:00:00",
             "send_interval_seconds": 60, "burst_size": 0, "burst_pause_seconds": 0,
             "steps-TOTAL_FORMS": 0, "steps-INITIAL_FORMS": 0}  # fmt: skip

    response = admin_client.post(admin_url("change", work_order.id), form)

    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    changed = WorkOrder.objects.get()
    assert changed.id == work_order.id and changed.stage == "reminder"
    assert changed.created_by is None and changed.sub_event == ""  # a change sets neither
    assert list(changed.steps.values_list("name", flat=True))[-1] == "send_continuously"


def test_admin_actions_start_stop_unlock_and_restart_after_a_confirmation_page(admin_client):
    work_order = WorkOrderFactory()
    workorder_steps_create(work_order=work_order)
    changelist = admin_url("changelist")
    selected = {"_selected_action": [work_order.id]}

    admin_client.post(changelist, {"action": "start", **selected})
    assert WorkOrder.objects.get(id=work_order.id).status == Status.QUEUED
    admin_client.post(changelist, {"action": "stop", **selected})
    assert WorkOrder.objects.get(id=work_order.id).status == Status.INTERRUPTED

    confirm = admin_client.post(changelist, {"action": "restart", **selected})
    assert confirm.status_code == 200 and "Restart work orders from a step" in confirm.content.decode()
    assert WorkOrder.objects.get(id=work_order.id).status == Status.INTERRUPTED  # nothing yet
    done = admin_client.post(changelist, {"action": "restart", "confirm": "yes", "step": "test", **selected})
    assert done.status_code == 302
    assert WorkOrder.objects.get(id=work_order.id).status == Status.QUEUED
    statuses = dict(WorkOrderStep.objects.filter(work_order=work_order).values_list("name", "status"))
    assert statuses["test"] == statuses["send"] == "ready"

    WorkOrder.objects.filter(id=work_order.id).update(lock_owner="w", lock_acquired_at=work_order.created_at,
                                                       lock_expires_at=work_order.created_at)  # fmt: skip
    admin_client.post(changelist, {"action": "unlock", **selected})
    assert WorkOrder.objects.get(id=work_order.id).lock_owner == ""


def test_start_is_refused_while_another_worker_holds_the_lease():
    work_order = WorkOrderFactory()
    later = work_order.created_at.replace(year=2999)
    WorkOrder.objects.filter(id=work_order.id).update(
        lock_owner="w", lock_acquired_at=work_order.created_at, lock_expires_at=later
    )
    with pytest.raises(ValidationError, match="stop it first"):
        workorder_start(work_order_id=work_order.id)
