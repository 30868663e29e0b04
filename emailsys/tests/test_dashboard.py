"""The dashboard's snapshot (rows made by factories), its health probe and refresh, its publication when an activity is
recorded, and the admin front page that shows it: every panel to whoever may see them all, fewer (and no socket) to
a user who may not."""

import re
import time
import uuid
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.models import Group, Permission
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from campaigns.models import Activity, Campaign, SendRecord
from campaigns.services.activities import activity_record
from campaigns.services.lifecycle import campaign_set_status
from campaigns.tests.factories import (
    AccountDailyUsageFactory,
    ActivityFactory,
    CampaignAccountFactory,
    CampaignFactory,
    SenderAccountFactory,
    SendRecordFactory,
    SequenceStepFactory,
)
from emailsys import clock
from emailsys.dashboard import (
    ACTIVITY_ROWS,
    DASHBOARD_PERMISSIONS,
    HEALTH_KEY,
    PANELS,
    dashboard_fragments,
    dashboard_health_probe,
    dashboard_health_store,
    dashboard_refresh,
    dashboard_snapshot,
)
from emailsys.live import live_changed, live_current, live_flush
from emailsys.live_access import live_group_permissions
from emailsys.ops_clients import ops_redis
from workorders.models import MailingSend, WorkOrder, WorkOrderStep
from workorders.services.state import workorder_steps_create
from workorders.tests.factories import ContactFactory, WorkOrderFactory

pytestmark = pytest.mark.django_db

PANEL_IDS = [panel.element_id for panel in PANELS]


@pytest.fixture(autouse=True)
def no_stored_health():
    ops_redis().delete(HEALTH_KEY)
    yield
    ops_redis().delete(HEALTH_KEY)


def mailing_send(work_order: WorkOrder, *, state: str, email: str, sent_at=None) -> MailingSend:
    return MailingSend.objects.create(
        work_order=work_order, email=email, contact=ContactFactory(email=email), event_code=work_order.event.code,
        stage=work_order.stage, language="en",
        account=work_order.account, state=state, sent_at=sent_at,
        message_id=f"<{uuid.uuid4().hex}@emailsys.test>" if state == MailingSend.State.SENT else "",
    )  # fmt: skip


def test_the_snapshot_counts_todays_sends_per_ledger_by_each_accounts_local_day() -> None:
    now = clock.now()
    utc = SenderAccountFactory(email="a-utc@emailsys.test", time_zone="UTC", daily_limit=40)
    # Far east: its day began at its own midnight, up to 14 h before UTC's.
    kiritimati = SenderAccountFactory(email="b-east@emailsys.test", time_zone="Pacific/Kiritimati", daily_limit=10)
    AccountDailyUsageFactory(account=utc, day=clock.local_day(time_zone="UTC", at=now), reserved=4)
    for _ in range(3):
        SendRecordFactory(account=utc, state=SendRecord.State.SENT)
    SendRecordFactory(account=kiritimati, state=SendRecord.State.SENT)
    SendRecordFactory(account=utc, state=SendRecord.State.SENT, sent_at=now - timedelta(days=2))  # not today
    SendRecordFactory(account=utc, state=SendRecord.State.UNKNOWN)
    SendRecordFactory(account=utc, state=SendRecord.State.FAILED)
    work_order = WorkOrderFactory(account=utc)
    mailing_send(work_order, state=MailingSend.State.SENT, email="m1@example.test", sent_at=now)
    mailing_send(work_order, state=MailingSend.State.UNKNOWN, email="m2@example.test")
    mailing_send(work_order, state=MailingSend.State.UNKNOWN, email="m3@example.test")

    data = dashboard_snapshot()

    assert data["sends_today"] == [
        {"ledger": "campaigns.sendrecord", "label": "Campaigns", "count": 4},
        {"ledger": "workorders.mailingsend", "label": "Event mailings", "count": 1},
    ]
    rows = {row["email"]: row for row in data["accounts"]}
    assert rows["a-utc@emailsys.test"] | {"id": 0} == {
        "id": 0, "email": "a-utc@emailsys.test", "status": "active", "status_reason": "", "sent_today": 4,
        "reserved_today": 4, "daily_limit": 40,
    }  # fmt: skip
    assert rows["b-east@emailsys.test"]["sent_today"] == 1
    # The totals are the accounts' rows summed (the same rule: each account's own local day).
    assert sum(row["count"] for row in data["sends_today"]) == sum(row["sent_today"] for row in data["accounts"])
    assert data["unknown"] == [
        {"ledger": "campaigns.sendrecord", "label": "Campaigns", "count": 1},
        {"ledger": "workorders.mailingsend", "label": "Event mailings", "count": 2},
    ]
    assert data["inbound"]["received_today"] == 0 and data["inbound"]["latest"] == [] and data["health"] is None


def test_the_snapshot_shows_running_work_orders_with_their_current_step() -> None:
    working = WorkOrderFactory(status=WorkOrder.Status.WORKING)
    steps = workorder_steps_create(work_order=working)
    now = clock.now()
    WorkOrderStep.objects.filter(id=steps[0].id).update(
        status=WorkOrderStep.Status.COMPLETE, done=5, total=5, started_at=now, ended_at=now
    )
    WorkOrderStep.objects.filter(id=steps[1].id).update(
        status=WorkOrderStep.Status.WORKING, done=2, total=5, message="rendering", started_at=now
    )
    WorkOrderFactory(status=WorkOrder.Status.COMPLETE)
    WorkOrderFactory(status=WorkOrder.Status.READY)

    rows = dashboard_snapshot()["workorders"]

    assert [(row["id"], row["status"]) for row in rows] == [(working.id, "working")]
    assert rows[0]["step"] == {"name": steps[1].get_name_display(), "status": "working", "message": "rendering",
                               "done": 2, "total": 5}  # fmt: skip


def test_the_activity_stream_holds_the_newest_rows_newest_first() -> None:
    campaign = CampaignFactory(name="Spring")
    now = clock.now()
    for minutes in range(ACTIVITY_ROWS + 5):
        ActivityFactory(campaign=campaign, created_at=now - timedelta(minutes=minutes), message=f"m{minutes}")

    activities = dashboard_snapshot()["activities"]

    assert [a["message"] for a in activities] == [f"m{minutes}" for minutes in range(ACTIVITY_ROWS)]
    assert activities[0] | {"id": 0, "at": ""} == {
        "id": 0, "at": "", "kind": "sent", "kind_label": "Sent", "campaign_id": campaign.id, "campaign": "Spring",
        "message": "m0",
    }  # fmt: skip


def test_with_no_data_every_panel_renders_its_empty_state() -> None:
    payload = live_current("dashboard", 0)
    fragments = dashboard_fragments(0, payload)

    assert list(fragments) == PANEL_IDS
    for element_id, html in fragments.items():
        assert html.strip().startswith(f'<section id="{element_id}"'), element_id
        assert f'data-live-key="dashboard" data-live-v="{payload["version"]}"' in html, element_id
    assert "No work order is running." in fragments["dashboard-workorders"]
    assert "Nothing has happened yet." in fragments["dashboard-activity"]
    assert "No health probe yet" in fragments["dashboard-system"]
    assert "No message classified yet." in fragments["dashboard-inbound"]


def test_the_probe_finds_no_worker_without_workers_and_the_panel_says_so() -> None:
    health = dashboard_health_probe()

    assert health["errors"] == {}
    assert health["workers"] == {"default": [], "sending": [], "workorders": [], "inbound": []}
    assert set(health["queue_depths"]) == {"default", "sending", "workorders", "inbound", "inbound_backfill"}
    assert health["sqs"] == {"configured": False}
    dashboard_health_store(health)
    html = dashboard_fragments(0, live_current("dashboard", 0))["dashboard-system"]
    assert html.count('<span class="dash-dot dash-down"></span>') >= 4  # every pool
    assert "not configured" in html
    assert re.search(r"checked [0-9] s ago", html)


def test_a_stale_probe_shows_every_component_as_unknown(settings) -> None:
    dashboard_health_store(
        {"probed_at": time.time() - 10 * settings.DASHBOARD_REFRESH_INTERVAL - 10, "errors": {},
         "workers": {"default": ["d@h"]}, "queue_depths": {"default": 3}, "beat_tick_age_s": 1.0,
         "heartbeat_age_s": 2.0, "sqs": {"configured": False}}
    )  # fmt: skip
    html = dashboard_fragments(0, live_current("dashboard", 0))["dashboard-system"]

    assert "is beat or the default pool down?" in html
    assert "dash-ok" not in html


@pytest.mark.django_db(transaction=True)
def test_recording_an_activity_publishes_the_dashboard_with_it() -> None:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("dashboard", channel)
    campaign = CampaignFactory(name="Autumn", status=Campaign.Status.DRAFT)
    SequenceStepFactory(campaign=campaign)
    CampaignAccountFactory(campaign=campaign)
    try:
        with transaction.atomic():
            campaign_set_status(campaign=campaign, status=Campaign.Status.ACTIVE)
        live_flush()
        message = async_to_sync(layer.receive)(channel)
    finally:
        async_to_sync(layer.group_discard)("dashboard", channel)
    payload = message["payload"]
    assert payload["key"] == "dashboard"
    assert payload["data"]["activities"][0]["campaign"] == "Autumn"
    assert "Autumn" in payload["fragments"]["dashboard-activity"]


@pytest.mark.django_db(transaction=True)
def test_the_refresh_stores_the_probe_and_publishes_a_newer_version() -> None:
    # A new sequence reads as version 1 before its first nextval, which is 1 too (reported to live-core).
    live_changed("dashboard", 0)
    before = live_current("dashboard", 0)["version"]
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("dashboard", channel)
    try:
        dashboard_refresh()
        message = async_to_sync(layer.receive)(channel)
    finally:
        async_to_sync(layer.group_discard)("dashboard", channel)
    assert message["payload"]["version"] > before
    assert message["payload"]["data"]["health"]["workers"]["default"] == []
    assert "checked" in message["payload"]["fragments"]["dashboard-system"]


# --- the page ----------------------------------------------------------------------------------------------------


def permission(name: str) -> Permission:
    app_label, codename = name.split(".")
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


@pytest.fixture
def some_rows() -> None:
    account = SenderAccountFactory(email="secret-sender@emailsys.test")
    SendRecordFactory(account=account, state=SendRecord.State.SENT)
    activity_record(kind=Activity.Kind.STATUS_CHANGED, campaign=CampaignFactory(name="Hidden campaign"), message="on")


def test_a_superuser_sees_every_panel_live(client, admin_user, some_rows) -> None:
    client.force_login(admin_user)
    response = client.get("/admin/")

    assert response.status_code == 200
    html = response.content.decode()
    for element_id in PANEL_IDS:
        assert f'id="{element_id}"' in html, element_id
    assert 'data-live-socket="/ws/live/dashboard/"' in html
    assert "emailsys/live.js" in html and "emailsys/dashboard.css" in html
    assert "secret-sender@emailsys.test" in html and "Hidden campaign" in html
    assert 'id="operations-module"' in html and 'id="recent-actions-module"' in html
    assert "Campaigns" in html  # the app list is still there


def test_a_viewer_sees_every_panel_live(client, django_user_model, some_rows) -> None:
    viewer = django_user_model.objects.create_user("viewer-1", password="x", is_staff=True)
    viewer.groups.add(Group.objects.get(name="viewer"))
    client.force_login(viewer)
    response = client.get("/admin/")

    assert response.status_code == 200
    html = response.content.decode()
    assert all(f'id="{element_id}"' in html for element_id in PANEL_IDS)
    assert 'data-live-socket="/ws/live/dashboard/"' in html


def test_a_user_without_every_view_permission_sees_only_its_panels_and_no_socket(
    client, django_user_model, some_rows
) -> None:
    user = django_user_model.objects.create_user("wo-only", password="x", is_staff=True)
    user.user_permissions.set([permission("workorders.view_workorder")])
    client.force_login(user)
    response = client.get("/admin/")

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="dashboard-workorders"' in html and 'id="dashboard-system"' in html
    for hidden in (
        "dashboard-accounts",
        "dashboard-activity",
        "dashboard-sends",
        "dashboard-unknown",
        "dashboard-inbound",
    ):
        assert f'id="{hidden}"' not in html, hidden
    assert "secret-sender@emailsys.test" not in html and "Hidden campaign" not in html
    assert "data-live-socket" not in html
    assert "Not live" in html


def test_the_front_page_renders_with_no_data_at_all(client, admin_user) -> None:
    client.force_login(admin_user)
    response = client.get("/admin/")
    assert response.status_code == 200
    assert "No sender account yet." in response.content.decode()


def test_the_site_root_and_view_site_lead_to_the_dashboard(client, admin_user) -> None:
    client.force_login(admin_user)
    response = client.get("/")
    assert (response.status_code, response["Location"]) == (302, "/admin/")


def test_the_dashboard_group_requires_every_permission_its_panels_show() -> None:
    """Every watcher gets the same fragments: the group needs every permission a panel shows, and no other."""
    assert set(DASHBOARD_PERMISSIONS) == set(live_group_permissions("dashboard"))


def test_the_refresh_is_scheduled_on_the_default_pool_and_a_backlog_of_it_expires() -> None:
    from django_celery_beat.models import PeriodicTask

    row = PeriodicTask.objects.get(name="emailsys: dashboard refresh")
    assert (row.task, row.queue, row.interval.every, row.expire_seconds) == (
        "emailsys.dashboard_refresh",
        "default",
        3,
        30,
    )


def test_the_snapshot_takes_as_many_queries_whatever_the_number_of_rows(django_assert_num_queries) -> None:
    def rows(count: int) -> None:
        for _ in range(count):
            account = SenderAccountFactory()
            SendRecordFactory(account=account, state=SendRecord.State.SENT)
            ActivityFactory(campaign=CampaignFactory())
            workorder_steps_create(work_order=WorkOrderFactory(status=WorkOrder.Status.WORKING))

    rows(1)
    with CaptureQueriesContext(connection) as few:
        dashboard_snapshot()
    rows(6)
    with django_assert_num_queries(len(few.captured_queries)):
        dashboard_snapshot()


def test_what_operators_and_recipients_wrote_is_escaped_in_the_fragments() -> None:
    ActivityFactory(campaign=CampaignFactory(name="<b>Bold</b>"), message='<img src=x onerror="alert(1)">')

    html = dashboard_fragments(0, live_current("dashboard", 0))["dashboard-activity"]

    assert "<img" not in html and "<b>Bold" not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
