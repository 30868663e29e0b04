"""Who is offered which admin action: every action of every registered ModelAdmin (from `admin.site._registry`) ×
{staff without permissions, viewer, operator, admin}: in the changelist's action dropdown or not, and when forced
by a POST without the permission, nothing changes. Expectations come from `ACTIONS`; an action missing there
fails the test, so a new one cannot be forgotten. Plus the custom admin views (the send-test page)."""

import re

import pytest
from auditlog.models import LogEntry
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.urls import reverse
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask, SolarSchedule

from audit.context import AuditSource, audit_context
from audit.services import audit_record
from campaigns.models import Campaign, SendRecord
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
from emailsys.services import api_token_create
from emailsys.testing import RecordingSmtpServer, free_port
from processing.services.imap import imap_account_create
from processing.tests.inbound_rows import email_make
from transfers.models import ImportJob
from workorders.models import MailingSend, WorkOrder
from workorders.services.state import workorder_steps_create
from workorders.tests.factories import ContactFactory, WorkOrderFactory

pytestmark = pytest.mark.django_db

RANKS = {"staff": 0, "viewer": 1, "operator": 2, "admin": 3, "nobody": 99}
ROLES = ["staff", "viewer", "operator", "admin"]
DELETE_ONLY = {"delete_selected": "admin"}
READ_ONLY = {"delete_selected": "nobody"}  # ReadOnlyAdmin: rows only services write
RESOLVE = {"delete_selected": "nobody", "mark_sent": "operator", "mark_failed": "operator", "resend": "operator"}

# model label → action → the least role offered it ("nobody": never offered).
ACTIONS: dict[str, dict[str, str]] = {
    "auth.group": DELETE_ONLY,
    "processing.mailbox": {**READ_ONLY, "sync_now": "operator"},
    "processing.inboundemail": {**READ_ONLY, "reclassify": "operator"},
    "processing.imapaccount": {**DELETE_ONLY, "test_connection": "operator", "poll_now": "operator"},
    "auth.user": DELETE_ONLY,
    "knox.authtoken": DELETE_ONLY,
    "auditlog.logentry": READ_ONLY,  # nobody edits or deletes the audit trail
    "axes.accessattempt": {**DELETE_ONLY, "cleanup_expired_attempts": "admin"},
    "axes.accessfailurelog": DELETE_ONLY,
    "axes.accesslog": DELETE_ONLY,
    "django_celery_beat.periodictask": {
        **DELETE_ONLY,
        "enable_tasks": "admin",
        "disable_tasks": "admin",
        "toggle_tasks": "admin",
        "run_tasks": "admin",
    },  # fmt: skip
    "django_celery_beat.clockedschedule": DELETE_ONLY,
    "django_celery_beat.crontabschedule": DELETE_ONLY,
    "django_celery_beat.solarschedule": DELETE_ONLY,
    "django_celery_beat.intervalschedule": DELETE_ONLY,
    "campaigns.senderaccount": {
        **DELETE_ONLY,
        "test_smtp": "operator",
        "pause": "operator",
        "resume": "operator",
        "disable": "operator",
        "reset_limits": "operator",
    },  # fmt: skip
    "campaigns.accountdailyusage": READ_ONLY,
    "campaigns.emailtemplate": DELETE_ONLY,
    "campaigns.campaign": {
        **DELETE_ONLY,
        "pause": "operator",
        "resume": "operator",
        "reset_progress": "operator",
        "dry_run": "operator",
    },  # fmt: skip
    "campaigns.campaignaccount": DELETE_ONLY,
    "campaigns.sequencestep": DELETE_ONLY,
    "campaigns.lead": {**DELETE_ONLY, "reset_progress": "operator", "stop": "operator"},
    "campaigns.recipient": {**DELETE_ONLY, "mark_replied": "operator"},
    "campaigns.sendrecord": RESOLVE,
    "campaigns.dryrunrecord": DELETE_ONLY,
    "campaigns.operatortestsend": DELETE_ONLY,
    "campaigns.suppression": DELETE_ONLY,
    "campaigns.activity": READ_ONLY,
    "workorders.contact": DELETE_ONLY,
    "workorders.segment": DELETE_ONLY,
    "workorders.event": DELETE_ONLY,
    "workorders.workorder": {
        **DELETE_ONLY,
        "start": "operator",
        "stop": "operator",
        "restart": "operator",
        "unlock": "operator",
    },  # fmt: skip
    "workorders.mailingsend": RESOLVE,
    "transfers.importjob": {},  # the record of an import: no actions
}
# What a forced POST adds so that an action which shows a confirmation page would act at once.
CONFIRM = {"post": "yes", "confirm": "yes", "step": "prepare"}


def label(model) -> str:
    return f"{model._meta.app_label}.{model._meta.model_name}"


def changelist(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


@pytest.fixture
def world() -> None:
    """At least one row of every registered model (the admin shows actions over rows, a POST selects one)."""
    account = SenderAccountFactory()
    campaign = CampaignFactory(name="Matrix campaign")
    CampaignAccountFactory(campaign=campaign, account=account)
    step = SequenceStepFactory(campaign=campaign)
    recipient = RecipientFactory(lead=LeadFactory(campaign=campaign))
    SendRecordFactory(recipient=recipient, step=step, account=account, state=SendRecord.State.UNKNOWN)
    DryRunRecordFactory(campaign=campaign, recipient=recipient, step=step, account=account)
    OperatorTestSendFactory(step=step, account=account)
    AccountDailyUsageFactory(account=account)
    EmailTemplateFactory()
    SuppressionFactory()
    ActivityFactory(campaign=campaign)
    contact = ContactFactory()
    work_order = WorkOrderFactory(account=account)
    workorder_steps_create(work_order=work_order)
    MailingSend.objects.create(work_order=work_order, contact=contact, email=contact.email, event_code="EV",
                               stage="invitation", language="en", account=account, message_id="<m@x>",
                               state=MailingSend.State.UNKNOWN)  # fmt: skip
    Group.objects.get_or_create(name="spare")
    ClockedSchedule.objects.create(clocked_time="2030-01-01T00:00:00Z")
    CrontabSchedule.objects.get_or_create(minute="7", hour="3")
    SolarSchedule.objects.get_or_create(event="sunrise", latitude=1, longitude=1)
    interval, _ = IntervalSchedule.objects.get_or_create(every=11, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.get_or_create(name="matrix", defaults={"task": "emailsys.heartbeat", "interval": interval})
    api_token_create(user=get_user_model().objects.create_user("token-owner"), expires_in=None)
    AccessAttempt.objects.create(username="guesser", ip_address="127.0.0.2", failures_since_start=3)
    AccessFailureLog.objects.create(username="guesser", ip_address="127.0.0.2")
    AccessLog.objects.create(username="token-owner", ip_address="127.0.0.1")
    with audit_context(source=AuditSource.COMMAND, command_user="matrix"):
        audit_record(action="campaign.pause", target=CampaignFactory())
    email_make()  # and its mailbox
    ImportJob.objects.create(kind="contacts", file="imports/matrix.csv", file_name="matrix.csv")
    imap_account_create(sender_account=SenderAccountFactory(), host="127.0.0.1", port=free_port(),
                        security="none", username="matrix", password="matrix-pw")  # fmt: skip


def every_row() -> tuple:
    """A digest of every table (one query): a refused action changes no row anywhere."""
    with connection.cursor() as cursor:
        tables = [connection.ops.quote_name(name) for name in connection.introspection.table_names(cursor)]
        digests = ", ".join(
            f"(SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t)"  # noqa: S608
            for table in tables
            if table.strip('"') not in ("django_session",)
        )
        cursor.execute(f"SELECT {digests}")  # noqa: S608 - the database's own table names, quoted
        return cursor.fetchone()


def login(role: str) -> Client:
    user = get_user_model().objects.create_user(f"admin-matrix-{role}", is_staff=True)
    if role != "staff":
        user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


def declared_actions(model_admin: admin.ModelAdmin) -> set[str]:
    """The actions a ModelAdmin has, the site-wide "delete selected" included (none when `actions = None`)."""
    return set() if model_admin.actions is None else {name for _, name, _ in model_admin._get_base_actions()}


def offered(page: str) -> set[str]:
    select = re.search(r'<select name="action"[^>]*>(.*?)</select>', page, re.S)
    return set() if select is None else set(re.findall(r'<option value="(\w+)"', select.group(1))) - {""}


def test_every_admin_action_has_its_expectation() -> None:
    registered = {label(model): declared_actions(model_admin) for model, model_admin in admin.site._registry.items()}
    assert {key: sorted(names) for key, names in registered.items() if set(ACTIONS.get(key, {})) != names} == {}
    assert sorted(set(ACTIONS) - set(registered)) == []


@pytest.mark.parametrize("role", ROLES)
def test_each_role_is_offered_and_may_force_only_its_actions(role: str, world: None) -> None:
    client = login(role)
    failures = []
    for model, model_admin in admin.site._registry.items():
        expected = {name for name, least in ACTIONS[label(model)].items() if RANKS[role] >= RANKS[least]}
        page = client.get(changelist(model))
        shown = offered(page.content.decode()) if page.status_code == 200 else set()
        if page.status_code not in (200, 403) or shown != expected:
            failures.append(f"{label(model)}: {page.status_code}, offered {sorted(shown)}, expected {sorted(expected)}")
        pk = model_admin.get_queryset(page.wsgi_request).values_list("pk", flat=True).first()
        assert pk is not None, f"no {label(model)} row to select"
        forced = sorted(set(ACTIONS[label(model)]) - expected)
        before = every_row() if forced else None
        for name in forced:
            for index in ({"index": 0}, {}):  # the changelist's form, and a confirmation page's second POST
                response = client.post(
                    changelist(model), {"action": name, ACTION_CHECKBOX_NAME: [pk], **index, **CONFIRM}
                )
                if response.status_code not in (200, 302, 403):
                    failures.append(f"{label(model)}.{name}: forced POST answered {response.status_code}")
        if forced and every_row() != before:
            failures.append(f"{label(model)}: {role} forced {forced} without permission, and rows changed")
    assert failures == []


def test_a_user_who_is_not_staff_gets_no_admin_page_at_all(world: None) -> None:
    user = get_user_model().objects.create_user("everything-but-staff", is_superuser=True)
    client = Client()
    client.force_login(user)
    before = every_row()
    selected = [Campaign.objects.first().pk]
    response = client.post(changelist(Campaign), {"action": "pause", ACTION_CHECKBOX_NAME: selected, "index": 0})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert every_row() == before


def test_the_send_test_page_needs_the_send_test_permission(world: None) -> None:
    campaign = Campaign.objects.get(name="Matrix campaign")
    step = campaign.steps.get()
    account = campaign.accounts.get()
    url = reverse("admin:campaigns_campaign_send_test", args=[campaign.pk])
    change_url = reverse("admin:campaigns_campaign_change", args=[campaign.pk])
    with RecordingSmtpServer() as smtp:
        account.smtp_port = smtp.port
        account.save()
        form = {"step": step.pk, "to_email": "me@example.test", "account": account.pk}
        viewer = login("viewer")
        assert url not in viewer.get(change_url).content.decode()
        assert viewer.get(url).status_code == 403
        assert viewer.post(url, form).status_code == 403
        assert viewer.get(reverse("admin:campaigns_campaign_send_test", args=[999999])).status_code == 403
        assert smtp.snapshot() == []

        operator = login("operator")
        assert url in operator.get(change_url).content.decode()
        assert operator.get(url).status_code == 200
        assert operator.post(url, form).status_code == 302
        assert [mail.rcpt_tos for mail in smtp.snapshot()] == [("me@example.test",)]

    # the audit trail: the operator's test send, from the admin; nothing of the viewer's refused tries
    recorded = LogEntry.objects.filter(additional_data__action="campaign.test_send")
    assert [(entry.actor.username, entry.additional_data["source"]) for entry in recorded] == [
        ("admin-matrix-operator", "admin")
    ]


# The work-order change page's buttons (JSON endpoints, workorders/admin.py LIVE_ACTIONS) → the least role.
LIVE_BUTTONS = {"start": "operator", "stop": "operator", "restart": "operator", "approve": "operator"}


@pytest.mark.parametrize("role", ROLES)
def test_the_work_order_buttons_refuse_a_role_without_their_permission_and_change_nothing(role: str, world: None):
    client = login(role)
    work_order_id = WorkOrder.objects.values_list("pk", flat=True).first()
    before = every_row()
    for action, least in LIVE_BUTTONS.items():
        if RANKS[role] >= RANKS[least]:
            continue
        url = reverse("admin:workorders_workorder_live_action", args=[work_order_id, action])
        response = client.post(url, {"step": "count"})
        assert response.status_code == 403 and response.json()["detail"], (role, action)
    assert every_row() == before
