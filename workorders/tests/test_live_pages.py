"""The live work-order pages as the server renders them: the list's cells and the change page's panel are the
fragments the live messages carry (one renderer), the page socket watches the right group, the buttons are shown
by permission, and their JSON endpoints check the permission, CSRF and the transition (the browser acceptance is
test_browser_workorder.py)."""

import json
import re

import pytest
from auditlog.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.urls import reverse

from emailsys.live import live_current
from workorders.models import WorkOrder
from workorders.services.live import duration_text, workorder_fragments
from workorders.services.state import workorder_steps_create
from workorders.tests.factories import WorkOrderFactory

pytestmark = pytest.mark.django_db


def login(username: str, *, role: str = "", permissions: tuple[str, ...] = ()) -> Client:
    user = get_user_model().objects.create_user(username, is_staff=True)
    if role:
        user.groups.add(Group.objects.get(name=role))
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(content_type__app_label="workorders", codename=codename))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def work_order() -> WorkOrder:
    work_order = WorkOrderFactory()
    workorder_steps_create(work_order=work_order)
    return work_order


def action_url(work_order_id: int, action: str) -> str:
    return reverse("admin:workorders_workorder_live_action", args=[work_order_id, action])


def test_every_fragment_is_one_element_with_its_id_key_and_version(work_order) -> None:
    payload = live_current("workorder", work_order.id)
    fragments = workorder_fragments(work_order.id, payload)
    assert set(fragments) == {f"workorder-{work_order.id}-{part}" for part in ("status", "lock", "step", "resume",
                                                                             "panel")}  # fmt: skip
    for element_id, html in fragments.items():
        opening = re.match(r"\s*<(\w+) id=\"([^\"]+)\"[^>]*>", html)
        assert opening and opening.group(2) == element_id, html[:120]
        assert f'data-live-key="workorder-{work_order.id}"' in opening.group(0)
        assert f'data-live-v="{payload["version"]}"' in opening.group(0)
        assert html.strip().endswith(f"</{opening.group(1)}>")
    assert payload["fragments"] == fragments  # the messages carry exactly these


def test_fragments_show_labels_progress_rate_and_eta_and_tolerate_missing_keys(work_order) -> None:
    payload = live_current("workorder", work_order.id)
    payload["data"]["status"] = "working"
    payload["data"]["steps"][4].update(status="working", done=40, total=160, rate_per_second=12.5, eta_seconds=9.6)
    fragments = workorder_fragments(work_order.id, payload)
    step = fragments[f"workorder-{work_order.id}-step"]
    assert "Send" in step and '<progress max="160" value="40">' in step and "12.5/s" in step and "ETA 10 s" in step
    assert "live-badge-working" in fragments[f"workorder-{work_order.id}-status"]
    bare = {**payload, "data": {"status": "awaiting_approval", "steps": [{"name": "count", "status": "complete"}]}}
    rendered = workorder_fragments(work_order.id, bare)
    assert "Awaiting approval" in rendered[f"workorder-{work_order.id}-status"]
    assert "waiting for an operator" in rendered[f"workorder-{work_order.id}-panel"]
    assert [duration_text(s) for s in (None, 4.4, 184, 7500)] == ["", "4 s", "3 min 4 s", "2 h 5 min"]


def test_the_change_page_shows_the_live_panel_and_the_operators_buttons(work_order) -> None:
    page = login("op", role="operator").get(reverse("admin:workorders_workorder_change", args=[work_order.id]))
    html = page.content.decode()
    fragments = live_current("workorder", work_order.id)["fragments"]
    assert f'data-live-socket="/ws/live/workorder-{work_order.id}/"' in html
    for fragment in fragments.values():
        if f"-{work_order.id}-panel" in fragment or f"-{work_order.id}-status" in fragment:
            assert fragment in html
    for action in ("start", "stop", "restart", "approve"):
        assert f'data-live-action="{action_url(work_order.id, action)}"' in html
    assert "data-live-errors" in html and 'name="step"' in html


def test_a_viewer_sees_the_panel_without_buttons(work_order) -> None:
    html = login("viewer", role="viewer").get(reverse("admin:workorders_workorder_change", args=[work_order.id]))
    html = html.content.decode()
    assert f'id="workorder-{work_order.id}-panel"' in html
    assert "data-live-action" not in html


def test_the_list_cells_are_fragments_and_its_socket_watches_the_rows_of_the_page(work_order) -> None:
    other = WorkOrderFactory()
    html = login("viewer", role="viewer").get(reverse("admin:workorders_workorder_changelist")).content.decode()
    (ids,) = re.findall(r'data-live-socket="/ws/live/workorders/\?ids=([0-9,]+)"', html)
    assert sorted(map(int, ids.split(","))) == sorted([work_order.id, other.id])
    for part in ("status", "lock", "step", "resume"):
        assert f'id="workorder-{work_order.id}-{part}"' in html


def test_a_viewer_gets_403_from_every_button_and_nothing_changes(work_order) -> None:
    viewer = login("viewer", role="viewer")
    before = WorkOrder.objects.values("status", "live_version").get(id=work_order.id)
    for action in ("start", "stop", "restart", "approve"):
        response = viewer.post(action_url(work_order.id, action), {"step": "count"})
        assert response.status_code == 403, action
        assert "permission" in response.json()["detail"]
    assert WorkOrder.objects.values("status", "live_version").get(id=work_order.id) == before
    assert not LogEntry.objects.filter(object_pk=str(work_order.id), content_type__model="workorder").exists()


def test_run_permission_alone_does_not_approve(work_order) -> None:
    runner = login("runner", permissions=("view_workorder", "run_workorder"))
    assert runner.post(action_url(work_order.id, "approve")).status_code == 403
    assert runner.post(action_url(work_order.id, "start")).status_code == 200


def test_start_answers_the_version_to_wait_for_and_a_refused_transition_is_409(work_order) -> None:
    operator = login("op", role="operator")
    response = operator.post(action_url(work_order.id, "start"))
    row = WorkOrder.objects.get(id=work_order.id)
    assert response.status_code == 200
    assert response.json() == {"version": row.live_version, "status": "queued"}

    again = operator.post(action_url(work_order.id, "start"))
    assert again.status_code == 409 and "already queued" in again.json()["detail"]
    approve = operator.post(action_url(work_order.id, "approve"))
    assert approve.status_code == 409 and "awaiting approval" in approve.json()["detail"]
    assert WorkOrder.objects.get(id=work_order.id).live_version == row.live_version


def test_bad_requests_are_json_errors_never_500(work_order) -> None:
    operator = login("op", role="operator")
    assert operator.get(action_url(work_order.id, "start")).status_code == 405
    assert operator.post(action_url(work_order.id, "explode")).status_code == 404
    assert operator.post(action_url(999999, "start")).status_code == 404
    bad_step = operator.post(action_url(work_order.id, "restart"), {"step": "nonsense"})
    assert bad_step.status_code == 400 and json.loads(bad_step.content)["detail"]
    assert WorkOrder.objects.get(id=work_order.id).status == WorkOrder.Status.READY


def test_a_post_without_the_csrf_token_is_refused(work_order) -> None:
    user = get_user_model().objects.create_user("csrf-op", is_staff=True)
    user.groups.add(Group.objects.get(name="operator"))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post(action_url(work_order.id, "start")).status_code == 403
    assert WorkOrder.objects.get(id=work_order.id).status == WorkOrder.Status.READY


def test_restart_from_a_step_posts_the_chosen_step(work_order) -> None:
    operator = login("op", role="operator")
    response = operator.post(action_url(work_order.id, "restart"), {"step": "dry_run"})
    assert response.status_code == 200 and response.json()["status"] == "queued"


def test_the_panel_links_the_review_files_and_lists_the_test_emails(work_order) -> None:
    payload = live_current("workorder", work_order.id)
    payload["data"].update(
        counts={"by_language": {"en": 120, "fr": 30}, "other_languages": 4, "already_sent": 2},
        artifacts={"dry_run": {"name": "dry-run.csv", "url": "/w/a/dry-run.csv"},
                   "prepared": [{"language": "fr", "name": "prepared-fr.eml", "url": "/w/a/prepared-fr.eml"}]},
        test_sends=[{"email": "t@example.test", "language": "fr", "state": "sent", "subject": "[TEST] Salut",
                     "sent_at": "2026-12-02T10:00:00+00:00", "record_url": "/admin/x/1/change/"}],
    )  # fmt: skip
    panel = workorder_fragments(work_order.id, payload)[f"workorder-{work_order.id}-panel"]
    assert '<a href="/w/a/dry-run.csv">Dry-run list</a>' in panel
    assert '<a href="/w/a/prepared-fr.eml">Prepared email: fr</a>' in panel
    assert '<a href="/admin/x/1/change/">t@example.test</a>' in panel and "[TEST] Salut" in panel
    assert "<dt>Eligible</dt><dd>150</dd>" in panel and "<dt>Already had this mailing</dt><dd>2</dd>" in panel
