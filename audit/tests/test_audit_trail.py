"""The audit trail: each entry point (admin, API with a token, management command) leaves an entry with the
right user, source, action and object; secrets appear only as changed; the admin shows the trail read-only and
the API lists and filters it."""

import re
from datetime import timedelta

import pytest
from auditlog.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import TextField
from django.db.models.functions import Cast
from django.urls import reverse
from rest_framework.test import APIClient

from audit.context import os_user
from campaigns.models import Campaign, SenderAccount, SendRecord
from campaigns.services.accounts import account_set_status
from campaigns.tests.factories import (
    CampaignAccountFactory,
    CampaignFactory,
    EmailTemplateFactory,
    SenderAccountFactory,
    SendRecordFactory,
    SequenceStepFactory,
)
from emailsys import clock
from emailsys.testing import api_authorization
from workorders.models import WorkOrder
from workorders.services.state import workorder_steps_create
from workorders.tests.factories import WorkOrderFactory

pytestmark = pytest.mark.django_db

OLD_PASSWORD = "Old-Secret-SMTP-pw!"
NEW_PASSWORD = "Brand-New-SMTP-pw?"


def entries(action: str) -> list[LogEntry]:
    return list(LogEntry.objects.filter(additional_data__action=action).order_by("id"))


def only_entry(action: str) -> LogEntry:
    found = entries(action)
    assert len(found) == 1, f"{action}: {len(found)} entries"
    return found[0]


def staff_user(username: str, *permissions: str):
    user = get_user_model().objects.create_user(username, f"{username}@emailsys.test", "pw", is_staff=True)
    for codename in permissions:  # each with the view permission of its model, without which the API shows nothing
        app_label, name = codename.split(".")
        permission = Permission.objects.get(content_type__app_label=app_label, codename=name)
        view = Permission.objects.get(content_type=permission.content_type, codename__startswith="view_")
        user.user_permissions.add(permission, view)
    return get_user_model().objects.get(pk=user.pk)  # a fresh object: no cached permissions


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=api_authorization(user))
    return client


def ciphertext(account: SenderAccount) -> str:
    raw = SenderAccount.objects.annotate(raw=Cast("smtp_password", output_field=TextField()))
    return raw.values_list("raw", flat=True).get(pk=account.pk)


def stored_trail() -> str:
    """Every stored column of every entry, as PostgreSQL holds it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(string_agg(row_to_json(e)::text, '\n'), '') FROM auditlog_logentry e")
        return cursor.fetchone()[0]


@pytest.fixture
def campaign() -> Campaign:
    campaign = CampaignFactory(status=Campaign.Status.ACTIVE)
    SequenceStepFactory(campaign=campaign, order=1, template=EmailTemplateFactory())
    CampaignAccountFactory(campaign=campaign, account=SenderAccountFactory())
    return campaign


def admin_pause(client, campaign: Campaign):
    return client.post(
        reverse("admin:campaigns_campaign_changelist"), {"action": "pause", "_selected_action": [campaign.pk]}
    )


# --- each source ---------------------------------------------------------------------------------------------


def test_an_admin_action_is_recorded_with_the_user_the_source_and_the_address(admin_client, admin_user, campaign):
    assert admin_pause(admin_client, campaign).status_code == 302

    entry = only_entry("campaign.pause")
    assert entry.actor == admin_user
    assert entry.additional_data["source"] == "admin"
    assert entry.additional_data["actor"] == admin_user.get_username()
    assert entry.remote_addr == "127.0.0.1"
    assert (entry.content_type.model_class(), entry.object_pk) == (Campaign, str(campaign.pk))
    assert entry.changes == {"status": ["active", "paused"]}


def test_an_api_call_with_a_token_is_recorded_with_the_tokens_user(campaign):
    account = campaign.accounts.get()
    operator = staff_user("ops", "campaigns.operate_senderaccount", "campaigns.change_senderaccount")
    response = token_client(operator).post(f"/api/v1/accounts/{account.pk}/pause/", {"reason": "warming up"})
    assert response.status_code == 200, response.content

    entry = only_entry("account.pause")
    assert entry.actor == operator
    assert entry.additional_data["source"] == "api"
    assert entry.additional_data["actor"] == "ops"
    assert entry.additional_data["detail"] == {"reason": "warming up"}
    assert (entry.content_type.model_class(), entry.object_pk) == (SenderAccount, str(account.pk))
    assert entry.changes == {"status": ["active", "paused"]}


def test_a_management_command_is_recorded_with_the_os_user_and_no_django_user(campaign):
    account = campaign.accounts.get()
    call_command("reset_account_limits", str(account.pk), stdout=open("/dev/null", "w"))  # noqa: SIM115

    entry = only_entry("account.reset_limits")
    assert entry.actor is None and entry.remote_addr is None
    assert entry.additional_data["source"] == "command"
    assert entry.additional_data["actor"] == os_user() != ""
    assert (entry.content_type.model_class(), entry.object_pk) == (SenderAccount, str(account.pk))


def test_an_import_is_one_entry_with_the_reports_counts(campaign, tmp_path):
    csv = tmp_path / "leads.csv"
    csv.write_text("lead_id,email\nL1,a@example.org\nL1,b@example.org\nL2,c@example.org\nL3,not-an-address\n")
    with pytest.raises(CommandError):  # a bad row: the good ones are imported, the command exits 1
        call_command("import_leads", str(campaign.pk), str(csv), stdout=open("/dev/null", "w"))  # noqa: SIM115

    entry = only_entry("campaign.import_leads")
    assert entry.additional_data["source"] == "command"
    assert entry.object_pk == str(campaign.pk)
    assert entry.additional_data["detail"] == {
        "created": 3, "updated": 0, "unchanged": 0, "skipped": 1, "leads_created": 2, "leads_updated": 0,
    }  # fmt: skip
    assert LogEntry.objects.count() == 1  # not one per row


def test_what_a_worker_does_on_its_own_is_not_recorded(campaign):
    account_set_status(account=campaign.accounts.get(), status=SenderAccount.Status.PAUSED, reason="3 failures")
    assert LogEntry.objects.count() == 0


# --- edits and secrets ---------------------------------------------------------------------------------------


def account_form(account: SenderAccount, **changes) -> dict:
    fields = ["email", "from_name", "first_name", "last_name", "provider", "signature", "smtp_host", "smtp_port",
              "security", "smtp_username", "time_zone", "daily_limit", "min_wait_seconds",
              "jitter_seconds"]  # fmt: skip
    return {**{name: getattr(account, name) for name in fields}, "smtp_password": "", **changes}


def test_an_admin_edit_that_changes_the_password_records_that_the_secret_changed_and_never_its_value(
    admin_client, admin_user
):
    account = SenderAccountFactory(smtp_password=OLD_PASSWORD, daily_limit=50)
    old_ciphertext = ciphertext(account)
    change_url = reverse("admin:campaigns_senderaccount_change", args=[account.pk])

    response = admin_client.post(change_url, account_form(account, daily_limit=80, smtp_password=NEW_PASSWORD))
    assert response.status_code == 302
    assert SenderAccount.objects.get(pk=account.pk).smtp_password == NEW_PASSWORD

    entry = only_entry("account.update")
    assert (entry.actor, entry.additional_data["source"]) == (admin_user, "admin")
    assert entry.changes == {"daily_limit": ["50", "80"], "smtp_password": ["***", "***"]}
    assert entry.additional_data["detail"] == {"secrets_changed": ["smtp_password"]}
    trail = stored_trail()
    for secret in (OLD_PASSWORD, NEW_PASSWORD, old_ciphertext, ciphertext(account)):
        assert secret not in trail

    # Saving with the password left empty keeps it: an edit of other fields says nothing about secrets.
    response = admin_client.post(change_url, account_form(account, daily_limit=90))
    assert response.status_code == 302
    assert entries("account.update")[-1].changes == {"daily_limit": ["80", "90"]}


def test_an_api_edit_of_a_secret_and_a_template_edit_are_recorded_as_diffs():
    account = SenderAccountFactory(smtp_password=OLD_PASSWORD)
    template = EmailTemplateFactory(subject="Hello")
    admin = staff_user("boss", "campaigns.change_senderaccount", "campaigns.change_emailtemplate")
    client = token_client(admin)

    assert client.patch(f"/api/v1/accounts/{account.pk}/", {"smtp_password": None}, format="json").status_code == 200
    assert client.patch(f"/api/v1/templates/{template.pk}/", {"subject": "Hi"}, format="json").status_code == 200

    removed = only_entry("account.update")
    assert removed.changes == {"smtp_password": ["***", ""]}
    assert (removed.actor, removed.additional_data["source"]) == (admin, "api")
    assert only_entry("template.update").changes == {"subject": ["Hello", "Hi"]}
    assert OLD_PASSWORD not in stored_trail()


# --- the admin pages -----------------------------------------------------------------------------------------


def test_the_admin_lists_the_trail_filters_it_and_offers_no_change_or_delete(admin_client, campaign):
    account = campaign.accounts.get()
    admin_pause(admin_client, campaign)
    call_command("reset_account_limits", str(account.pk), stdout=open("/dev/null", "w"))  # noqa: SIM115
    changelist = reverse("admin:auditlog_logentry_changelist")

    page = admin_client.get(changelist)
    assert page.status_code == 200
    text = page.content.decode()
    assert rows_shown(text) == [("account.reset_limits", "command"), ("campaign.pause", "admin")]
    assert "delete_selected" not in text
    assert reverse("admin:auditlog_logentry_add") not in text

    assert rows_shown(admin_client.get(changelist, {"source": "command"}).content.decode()) == [
        ("account.reset_limits", "command")
    ]
    assert rows_shown(admin_client.get(changelist, {"audit_action": "campaign.pause"}).content.decode()) == [
        ("campaign.pause", "admin")
    ]
    for odd in ("object_type=abc", "source=%ED%B2%80", "audit_action=%00", "actor__id__exact=x", "timestamp__gte=x"):
        assert admin_client.get(f"{changelist}?{odd}").status_code in (200, 302), odd

    entry = only_entry("campaign.pause")
    detail = admin_client.get(reverse("admin:auditlog_logentry_change", args=[entry.pk]))
    assert detail.status_code == 200
    detail_text = detail.content.decode()
    assert 'name="_save"' not in detail_text and "deletelink" not in detail_text
    delete_url = reverse("admin:auditlog_logentry_delete", args=[entry.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    bulk = admin_client.post(changelist, {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"})
    assert bulk.status_code in (200, 302)
    assert LogEntry.objects.filter(pk=entry.pk).exists()
    assert admin_client.post(change_url_of(entry), {}).status_code == 403


def rows_shown(page: str) -> list[tuple[str, str]]:
    """(action, source) of each row of the changelist's table."""
    actions = re.findall(r'<td class="field-audit_action">([^<]*)</td>', page)
    sources = re.findall(r'<td class="field-source">([^<]*)</td>', page)
    return list(zip(actions, sources, strict=True))


def change_url_of(entry: LogEntry) -> str:
    return reverse("admin:auditlog_logentry_change", args=[entry.pk])


# --- the API -------------------------------------------------------------------------------------------------


def test_the_api_lists_filters_and_shows_entries_to_users_with_the_view_permission(admin_client, campaign):
    account = campaign.accounts.get()
    admin_pause(admin_client, campaign)
    call_command("reset_account_limits", str(account.pk), stdout=open("/dev/null", "w"))  # noqa: SIM115
    operator = staff_user("ops", "campaigns.operate_senderaccount", "campaigns.change_senderaccount")
    operator_api = token_client(operator)
    assert operator_api.post(f"/api/v1/accounts/{account.pk}/pause/", {}).status_code == 200

    auditor = token_client(staff_user("auditor", "auditlog.view_logentry"))

    def listed(**query) -> list[tuple[str, str, str]]:
        response = auditor.get("/api/v1/audit/", query)
        assert response.status_code == 200, response.content
        return [(e["action"], e["source"], e["actor"]) for e in response.json()["results"]]

    assert listed() == [("account.pause", "api", "ops"), ("account.reset_limits", "command", os_user()),
                        ("campaign.pause", "admin", "admin")]  # fmt: skip
    assert listed(source="command") == [("account.reset_limits", "command", os_user())]
    assert listed(action="campaign.pause") == [("campaign.pause", "admin", "admin")]
    assert listed(actor="ops") == [("account.pause", "api", "ops")]
    assert [a for a, _, _ in listed(object_type="campaigns.senderaccount", object_id=str(account.pk))] == [
        "account.pause", "account.reset_limits",
    ]  # fmt: skip
    later = (clock.now() + timedelta(hours=1)).isoformat()
    assert listed(since=later) == [] and len(listed(until=later)) == 3

    first = auditor.get("/api/v1/audit/", {"action": "account.pause"}).json()["results"][0]
    detail = auditor.get(f"/api/v1/audit/{first['id']}/")
    assert detail.status_code == 200
    assert detail.json() | {"timestamp": None, "id": None} == {
        "id": None, "timestamp": None, "action": "account.pause", "kind": "update", "source": "api",
        "actor": "ops", "actor_id": operator.pk, "remote_addr": "127.0.0.1", "object_type": "campaigns.senderaccount",
        "object_id": str(account.pk), "object_repr": account.email, "changes": {"status": ["active", "paused"]},
        "detail": {"reason": "paused by ops via the API"},
    }  # fmt: skip

    nul = "\x00"
    for bad, value in (("source", "bogus"), ("action", "campaign.explode"), ("object_type", "nope"), ("since", "x"),
                       ("object_type", f"campaigns{nul}.campaign"), ("actor", nul), ("object_id", nul)):  # fmt: skip
        response = auditor.get("/api/v1/audit/", {bad: value})
        assert response.status_code == 400 and bad in response.json(), (bad, response.content)

    assert auditor.delete(f"/api/v1/audit/{first['id']}/").status_code == 405
    assert auditor.post("/api/v1/audit/", {}).status_code == 405
    assert operator_api.get("/api/v1/audit/").status_code == 403  # staff, without the view permission
    assert APIClient().get("/api/v1/audit/").status_code in (401, 403)


# --- more actions, one service call each -------------------------------------------------------------------


def test_work_order_operations_and_a_resolved_send_are_recorded_and_a_refused_action_is_not(admin_client, admin_user):
    work_order = WorkOrderFactory()
    workorder_steps_create(work_order=work_order)
    url = f"/api/v1/workorders/{work_order.id}"
    assert admin_client.post(f"{url}/start/").status_code == 200
    assert admin_client.post(f"{url}/start/").status_code == 400  # refused: already queued, not recorded
    assert admin_client.post(f"{url}/stop/").status_code == 200
    assert admin_client.post(f"{url}/restart/", {"step": "prepare"}, content_type="application/json").status_code == 200
    WorkOrder.objects.filter(id=work_order.id).update(lock_owner="w", lock_acquired_at=work_order.created_at,
                                                       lock_expires_at=work_order.created_at)  # fmt: skip
    assert admin_client.post(f"{url}/unlock/").status_code == 200
    assert admin_client.post(f"{url}/unlock/").status_code == 200  # no lock to clear: nothing happened

    record = SendRecordFactory(state=SendRecord.State.UNKNOWN)
    response = admin_client.post(f"/api/v1/send-records/{record.pk}/resolve/", {"action": "mark_failed"})
    assert response.status_code == 200, response.content

    trail = [(e.additional_data["action"], e.object_pk, e.additional_data["source"], e.actor) for e in
             LogEntry.objects.order_by("id")]  # fmt: skip
    wo = str(work_order.id)
    assert trail == [
        ("work_order.start", wo, "api", admin_user),
        ("work_order.stop", wo, "api", admin_user),
        ("work_order.restart", wo, "api", admin_user),
        ("work_order.unlock", wo, "api", admin_user),
        ("send.resolve", str(record.pk), "api", admin_user),
    ]
    assert only_entry("work_order.restart").additional_data["detail"] == {"step": "prepare"}
    resolved = only_entry("send.resolve")
    assert resolved.changes == {"state": ["unknown", "failed"]}
    assert resolved.additional_data["detail"] == {"verdict": "mark_failed"}


def test_a_campaign_import_and_an_admin_dry_run_are_recorded(admin_client, admin_user, tmp_path):
    SenderAccountFactory(email="sender@emailsys.test")
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: Imported\nstatus: active\naccounts: [{email: sender@emailsys.test}]\n"
        "steps:\n  - {order: 1, template: {name: t1, subject: Hi, body_text: Hello}}\n"
    )
    call_command("import_campaign", str(path), stdout=open("/dev/null", "w"))  # noqa: SIM115
    campaign = Campaign.objects.get(name="Imported")

    assert [(e.additional_data["action"], e.additional_data["source"]) for e in LogEntry.objects.order_by("id")] == [
        ("template.create", "command"), ("campaign.import", "command"), ("campaign.activate", "command"),
    ]  # fmt: skip
    assert only_entry("campaign.import").additional_data["detail"] == {
        "steps": 1, "accounts": 1, "templates_created": 1, "status": "active",
    }  # fmt: skip

    response = admin_client.post(
        reverse("admin:campaigns_campaign_changelist"), {"action": "dry_run", "_selected_action": [campaign.pk]}
    )
    assert response.status_code == 302
    dry_run = only_entry("campaign.dry_run")
    assert (dry_run.actor, dry_run.additional_data["source"], dry_run.object_pk) == (
        admin_user, "admin", str(campaign.pk),
    )  # fmt: skip
    assert dry_run.additional_data["detail"] == {"records": 0, "errors": 0}
