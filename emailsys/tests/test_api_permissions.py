"""Who may call which API operation: every operation of the OpenAPI schema × {anonymous, bad token, non-staff,
staff without permissions, viewer, operator, admin}. The expectations come from `OPERATIONS`, keyed by operationId;
an operation of the schema missing there fails the test, so a new endpoint cannot be forgotten. An allowed
request is made with valid data and does the thing; a refused one changes no row at all."""

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pytest
from auditlog.models import LogEntry
from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.cache import cache as default_cache
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from drf_spectacular.generators import SchemaGenerator
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.test import APIClient, APIRequestFactory, force_authenticate

from audit.context import AuditSource, audit_context
from audit.services import audit_record
from campaigns.models import Campaign, Lead, Recipient, SenderAccount, SendRecord, SequenceStep, Suppression
from campaigns.tests.factories import (
    ActivityFactory,
    CampaignAccountFactory,
    CampaignFactory,
    EmailTemplateFactory,
    LeadFactory,
    RecipientFactory,
    SenderAccountFactory,
    SendRecordFactory,
    SequenceStepFactory,
    SuppressionFactory,
)
from emailsys.roles import PROJECT_APPS
from emailsys.testing import api_authorization
from transfers.models import ImportJob
from workorders.models import Contact, Event, Segment, WorkOrder
from workorders.services.state import workorder_steps_create
from workorders.tests.factories import ContactFactory, EventFactory, SegmentFactory, WorkOrderFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path) -> None:
    """The world's stored dry-run list goes to this test's own directory."""
    settings.MEDIA_ROOT = tmp_path / "media"


# Who may: "staff" = any active staff user; "viewer" ⊂ "operator" ⊂ "admin".
RANKS = {"anyone": -1, "staff": 0, "viewer": 1, "operator": 2, "admin": 3}
CALLERS = ["anonymous", "bad_token", "non_staff", "staff", "viewer", "operator", "admin"]


@dataclass
class World:
    """One of everything the operations act on, built once per test."""

    campaign: Campaign
    spare_campaign: Campaign
    lead: Lead
    recipient: Recipient
    account: SenderAccount
    spare_account: SenderAccount
    template: Any
    spare_template: Any
    activity: Any
    unknown_send: SendRecord
    work_order: WorkOrder
    audit_entry: Any
    gated_work_order: WorkOrder | None = None  # awaiting approval, with a stored dry-run list
    crud: dict[str, Any] = field(default_factory=dict)  # contact, segment, event, step, suppression and spares
    ids: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Op:
    """`min_role` may call it; `request(world)` gives (path, body); `done(world, body)` proves the effect."""

    min_role: str
    request: Callable[[World], tuple[str, Any]]
    allowed_status: tuple[int, ...] = (200,)
    done: Callable[[World, Any], bool] | None = None


def _path(template: str) -> Callable[[World], tuple[str, Any]]:
    return lambda world: (template.format(w=world), None)


def _campaign_body(world: World) -> dict:
    return {"name": "Renamed by the matrix", "time_zone": "UTC"}


def _account_body(world: World) -> dict:
    return {"email": world.account.email, "smtp_host": "127.0.0.1", "smtp_port": 1025, "security": "none",
            "time_zone": "UTC", "daily_limit": 50}  # fmt: skip


def _template_body(world: World) -> dict:
    return {"name": "Matrix template", "subject": "Hi {{ first_name }}", "body_text": "Hello", "body_html": ""}


def _lead_body(world: World, external_id: str) -> dict:
    return {"campaign": world.campaign.pk, "external_id": external_id,
            "recipients": [{"email": f"{external_id}@example.test", "first_name": "Ann"}]}  # fmt: skip


def _work_order_body(world: World) -> dict:
    return {"event": EventFactory(sub_event="m1").id, "stage": "invitation", "audience": SegmentFactory().id,
            "account": world.account.id, "template": world.template.id, "subjects": {"en": ""},
            "testers": ["t@example.test"]}  # fmt: skip


def _import_job(world: World) -> int:
    """A leads upload into the world's campaign, made on first use."""
    if "import_job" not in world.ids:
        job = ImportJob(kind="leads", campaign=world.campaign, file_name="leads.csv", file_size=31)
        job.file.save("leads.csv", ContentFile(b"lead_id,email\na,a@example.test\n"), save=False)
        job.save()
        world.ids["import_job"] = job.pk
    return world.ids["import_job"]


def _status(model, pk: int, status: str) -> bool:
    return model.objects.filter(pk=pk, status=status).exists()


def _row(model, row):
    return model.objects.get(pk=row.pk)


# In the order they run: an allowed caller activates a campaign before pausing it, starts a work order before
# stopping it, and deletes only spare rows.
OPERATIONS: dict[str, Op] = {
    "v1_health_retrieve": Op("staff", _path("/api/v1/health/"), (200, 503)),
    # a password for a token: anyone may try (django-axes counts the failures)
    "v1_auth_login_create": Op(
        "anyone", lambda w: ("/api/v1/auth/login/", {"username": "nobody-here", "password": "wrong"}), (400,)
    ),
    # the audit trail
    "v1_audit_list": Op("viewer", _path("/api/v1/audit/"), done=lambda w, body: body["count"] >= 1),
    "v1_audit_retrieve": Op("viewer", _path("/api/v1/audit/{w.audit_entry.pk}/")),
    # campaigns
    "v1_campaigns_list": Op("viewer", _path("/api/v1/campaigns/"), done=lambda w, body: body["count"] == 2),
    "v1_campaigns_retrieve": Op("viewer", _path("/api/v1/campaigns/{w.campaign.pk}/")),
    "v1_campaigns_progress_retrieve": Op("viewer", _path("/api/v1/campaigns/{w.campaign.pk}/progress/")),
    "v1_campaigns_create": Op(
        "admin",
        lambda w: ("/api/v1/campaigns/", {"name": "Made by the matrix", "time_zone": "UTC"}),
        (201,),
        done=lambda w, body: Campaign.objects.filter(name="Made by the matrix").exists(),
    ),
    "v1_campaigns_update": Op(
        "admin",
        lambda w: (f"/api/v1/campaigns/{w.campaign.pk}/", _campaign_body(w)),
        done=lambda w, body: Campaign.objects.get(pk=w.campaign.pk).name == "Renamed by the matrix",
    ),
    "v1_campaigns_partial_update": Op(
        "admin",
        lambda w: (f"/api/v1/campaigns/{w.campaign.pk}/", {"batch_size": 7}),
        done=lambda w, body: Campaign.objects.get(pk=w.campaign.pk).batch_size == 7,
    ),
    "v1_campaigns_resume_create": Op(
        "operator",
        lambda w: (f"/api/v1/campaigns/{w.campaign.pk}/resume/", {}),
        done=lambda w, body: _status(Campaign, w.campaign.pk, "active"),
    ),
    "v1_campaigns_pause_create": Op(
        "operator",
        lambda w: (f"/api/v1/campaigns/{w.campaign.pk}/pause/", {}),
        done=lambda w, body: _status(Campaign, w.campaign.pk, "paused"),
    ),
    "v1_campaigns_destroy": Op(
        "admin",
        _path("/api/v1/campaigns/{w.spare_campaign.pk}/"),
        (204,),
        done=lambda w, body: not Campaign.objects.filter(pk=w.spare_campaign.pk).exists(),
    ),
    # leads
    "v1_leads_list": Op("viewer", _path("/api/v1/leads/"), done=lambda w, body: body["count"] >= 1),
    "v1_leads_retrieve": Op("viewer", _path("/api/v1/leads/{w.lead.pk}/")),
    "v1_leads_create": Op(
        "operator",
        lambda w: ("/api/v1/leads/", _lead_body(w, "matrix-one")),
        (201,),
        done=lambda w, body: Lead.objects.filter(external_id="matrix-one").exists(),
    ),
    "v1_leads_bulk_create": Op(
        "operator",
        lambda w: ("/api/v1/leads/bulk/", [_lead_body(w, "matrix-bulk")]),
        (201,),
        done=lambda w, body: Lead.objects.filter(external_id="matrix-bulk").exists(),
    ),
    "v1_leads_replied_create": Op(
        "operator",
        lambda w: (f"/api/v1/leads/{w.lead.pk}/replied/", {"email": w.recipient.email}),
        done=lambda w, body: _status(Recipient, w.recipient.pk, "replied"),
    ),
    # accounts
    "v1_accounts_list": Op("viewer", _path("/api/v1/accounts/")),
    "v1_accounts_retrieve": Op("viewer", _path("/api/v1/accounts/{w.account.pk}/")),
    "v1_accounts_create": Op(
        "admin",
        lambda w: ("/api/v1/accounts/", {**_account_body(w), "email": "matrix@emailsys.test"}),
        (201,),
        done=lambda w, body: SenderAccount.objects.filter(email="matrix@emailsys.test").exists(),
    ),
    "v1_accounts_update": Op(
        "admin",
        lambda w: (f"/api/v1/accounts/{w.account.pk}/", _account_body(w)),
        done=lambda w, body: SenderAccount.objects.get(pk=w.account.pk).daily_limit == 50,
    ),
    "v1_accounts_partial_update": Op(
        "admin",
        lambda w: (f"/api/v1/accounts/{w.account.pk}/", {"daily_limit": 60}),
        done=lambda w, body: SenderAccount.objects.get(pk=w.account.pk).daily_limit == 60,
    ),
    "v1_accounts_pause_create": Op(
        "operator",
        lambda w: (f"/api/v1/accounts/{w.account.pk}/pause/", {}),
        done=lambda w, body: _status(SenderAccount, w.account.pk, "paused"),
    ),
    "v1_accounts_resume_create": Op(
        "operator",
        lambda w: (f"/api/v1/accounts/{w.account.pk}/resume/", {}),
        done=lambda w, body: _status(SenderAccount, w.account.pk, "active"),
    ),
    "v1_accounts_destroy": Op(
        "admin",
        _path("/api/v1/accounts/{w.spare_account.pk}/"),
        (204,),
        done=lambda w, body: not SenderAccount.objects.filter(pk=w.spare_account.pk).exists(),
    ),
    # templates
    "v1_templates_list": Op("viewer", _path("/api/v1/templates/")),
    "v1_templates_retrieve": Op("viewer", _path("/api/v1/templates/{w.template.pk}/")),
    "v1_templates_create": Op("admin", lambda w: ("/api/v1/templates/", _template_body(w)), (201,)),
    "v1_templates_update": Op(
        "admin",
        lambda w: (f"/api/v1/templates/{w.template.pk}/", {**_template_body(w), "name": "Renamed"}),
        done=lambda w, body: body["name"] == "Renamed",
    ),
    "v1_templates_partial_update": Op(
        "admin",
        lambda w: (f"/api/v1/templates/{w.template.pk}/", {"subject": "Patched"}),
        done=lambda w, body: body["subject"] == "Patched",
    ),
    "v1_templates_destroy": Op("admin", _path("/api/v1/templates/{w.spare_template.pk}/"), (204,)),
    # sequence steps (the world's campaign is paused by now: its steps' delays may change, a new order is free)
    "v1_steps_list": Op("viewer", _path("/api/v1/steps/"), done=lambda w, body: body["count"] >= 2),
    "v1_steps_retrieve": Op("viewer", lambda w: (f"/api/v1/steps/{w.crud['step'].pk}/", None)),
    "v1_steps_create": Op(
        "admin",
        lambda w: ("/api/v1/steps/", {"campaign": w.campaign.pk, "order": 9, "template": w.template.pk}),
        (201,),
        done=lambda w, body: w.campaign.steps.filter(order=9).exists(),
    ),
    "v1_steps_update": Op(
        "admin",
        lambda w: (
            f"/api/v1/steps/{w.crud['step'].pk}/",
            {"campaign": w.campaign.pk, "order": w.crud["step"].order, "template": w.template.pk, "delay_seconds": 60},
        ),
        done=lambda w, body: _row(SequenceStep, w.crud["step"]).delay_seconds == 60,
    ),  # fmt: skip
    "v1_steps_partial_update": Op(
        "admin",
        lambda w: (f"/api/v1/steps/{w.crud['step'].pk}/", {"delay_seconds": 120}),
        done=lambda w, body: _row(SequenceStep, w.crud["step"]).delay_seconds == 120,
    ),
    "v1_steps_destroy": Op(
        "admin",
        lambda w: (f"/api/v1/steps/{w.crud['spare_step'].pk}/", None),
        (204,),
        done=lambda w, body: not SequenceStep.objects.filter(pk=w.crud["spare_step"].pk).exists(),
    ),
    # suppressions (an operator adds them; changing or removing one is the admin's)
    "v1_suppressions_list": Op("viewer", _path("/api/v1/suppressions/"), done=lambda w, body: body["count"] >= 2),
    "v1_suppressions_retrieve": Op("viewer", lambda w: (f"/api/v1/suppressions/{w.crud['suppression'].pk}/", None)),
    "v1_suppressions_create": Op(
        "operator",
        lambda w: ("/api/v1/suppressions/", {"value": "Matrix@Suppressed.test"}),
        (201,),
        done=lambda w, body: Suppression.objects.filter(value="matrix@suppressed.test").exists(),
    ),
    "v1_suppressions_update": Op(
        "admin",
        lambda w: (
            f"/api/v1/suppressions/{w.crud['suppression'].pk}/",
            {"value": w.crud["suppression"].value, "reason": "matrix"},
        ),
        done=lambda w, body: _row(Suppression, w.crud["suppression"]).reason == "matrix",
    ),  # fmt: skip
    "v1_suppressions_partial_update": Op(
        "admin",
        lambda w: (f"/api/v1/suppressions/{w.crud['suppression'].pk}/", {"reason": "patched"}),
        done=lambda w, body: _row(Suppression, w.crud["suppression"]).reason == "patched",
    ),
    "v1_suppressions_destroy": Op(
        "admin",
        lambda w: (f"/api/v1/suppressions/{w.crud['spare_suppression'].pk}/", None),
        (204,),
        done=lambda w, body: not Suppression.objects.filter(pk=w.crud["spare_suppression"].pk).exists(),
    ),
    # what happened
    "v1_activities_list": Op("viewer", _path("/api/v1/activities/")),
    "v1_activities_retrieve": Op("viewer", _path("/api/v1/activities/{w.activity.pk}/")),
    "v1_send_records_list": Op("viewer", _path("/api/v1/send-records/")),
    "v1_send_records_retrieve": Op("viewer", _path("/api/v1/send-records/{w.unknown_send.pk}/")),
    "v1_send_records_resolve_create": Op(
        "operator",
        lambda w: (f"/api/v1/send-records/{w.unknown_send.pk}/resolve/", {"action": "mark_failed"}),
        done=lambda w, body: SendRecord.objects.get(pk=w.unknown_send.pk).state == "failed",
    ),
    # work orders
    "v1_workorders_list": Op("viewer", _path("/api/v1/workorders/")),
    "v1_workorders_retrieve": Op("viewer", _path("/api/v1/workorders/{w.work_order.pk}/")),
    "v1_workorders_create": Op(
        "operator",
        lambda w: ("/api/v1/workorders/", _work_order_body(w)),
        (201,),
        done=lambda w, body: WorkOrder.objects.filter(pk=body["id"]).exists(),
    ),
    "v1_workorders_start_create": Op(
        "operator",
        lambda w: (f"/api/v1/workorders/{w.work_order.pk}/start/", None),
        done=lambda w, body: _status(WorkOrder, w.work_order.pk, "queued"),
    ),
    "v1_workorders_stop_create": Op(
        "operator",
        lambda w: (f"/api/v1/workorders/{w.work_order.pk}/stop/", None),
        done=lambda w, body: WorkOrder.objects.get(pk=w.work_order.pk).stop_requested,
    ),
    "v1_workorders_restart_create": Op(
        "operator",
        lambda w: (f"/api/v1/workorders/{w.work_order.pk}/restart/", {"step": "prepare"}),
        done=lambda w, body: _status(WorkOrder, w.work_order.pk, "queued"),
    ),
    "v1_workorders_approve_create": Op(
        "operator",
        lambda w: (f"/api/v1/workorders/{w.gated_work_order.pk}/approve/", None),
        done=lambda w, body: _status(WorkOrder, w.gated_work_order.pk, "queued") and body["approved_by"] is not None,
    ),
    "v1_workorders_artifacts_list": Op(
        "viewer",
        _path("/api/v1/workorders/{w.gated_work_order.pk}/artifacts/"),
        done=lambda w, body: [row["name"] for row in body] == ["dry-run.csv"],
    ),
    "v1_workorders_artifacts_retrieve": Op(
        "viewer", _path("/api/v1/workorders/{w.gated_work_order.pk}/artifacts/dry-run.csv/")
    ),
    "v1_workorders_unlock_create": Op(
        "operator",
        lambda w: (f"/api/v1/workorders/{w.work_order.pk}/unlock/", None),
        done=lambda w, body: WorkOrder.objects.get(pk=w.work_order.pk).lock_owner == "",
    ),
    # contacts (an operator adds and edits them; deleting is the admin's)
    "v1_contacts_list": Op("viewer", _path("/api/v1/contacts/"), done=lambda w, body: body["count"] >= 2),
    "v1_contacts_retrieve": Op("viewer", lambda w: (f"/api/v1/contacts/{w.crud['contact'].pk}/", None)),
    "v1_contacts_create": Op(
        "operator",
        lambda w: ("/api/v1/contacts/", {"email": "matrix@contacts.test"}),
        (201,),
        done=lambda w, body: Contact.objects.filter(email="matrix@contacts.test").exists(),
    ),
    "v1_contacts_update": Op(
        "operator",
        lambda w: (f"/api/v1/contacts/{w.crud['contact'].pk}/", {"email": w.crud["contact"].email, "name": "Renamed"}),
        done=lambda w, body: _row(Contact, w.crud["contact"]).name == "Renamed",
    ),
    "v1_contacts_partial_update": Op(
        "operator",
        lambda w: (f"/api/v1/contacts/{w.crud['contact'].pk}/", {"subscribed": False}),
        done=lambda w, body: not _row(Contact, w.crud["contact"]).subscribed,
    ),
    "v1_contacts_destroy": Op(
        "admin",
        lambda w: (f"/api/v1/contacts/{w.crud['spare_contact'].pk}/", None),
        (204,),
        done=lambda w, body: not Contact.objects.filter(pk=w.crud["spare_contact"].pk).exists(),
    ),
    # segments and events (the admin's)
    "v1_segments_list": Op("viewer", _path("/api/v1/segments/"), done=lambda w, body: body["count"] >= 2),
    "v1_segments_retrieve": Op("viewer", lambda w: (f"/api/v1/segments/{w.crud['segment'].pk}/", None)),
    "v1_segments_count_retrieve": Op(
        "viewer",
        lambda w: (f"/api/v1/segments/{w.crud['segment'].pk}/count/", None),
        done=lambda w, body: body["count"] >= 1,
    ),
    "v1_segments_create": Op(
        "admin",
        lambda w: ("/api/v1/segments/", {"slug": "matrix-made", "name": "Made", "rule": {"language": "en"}}),
        (201,),
        done=lambda w, body: Segment.objects.filter(slug="matrix-made").exists(),
    ),
    "v1_segments_update": Op(
        "admin",
        lambda w: (
            f"/api/v1/segments/{w.crud['segment'].pk}/",
            {"slug": w.crud["segment"].slug, "name": "Renamed", "rule": {"always": True}},
        ),
        done=lambda w, body: _row(Segment, w.crud["segment"]).name == "Renamed",
    ),  # fmt: skip
    "v1_segments_partial_update": Op(
        "admin",
        lambda w: (f"/api/v1/segments/{w.crud['segment'].pk}/", {"description": "patched"}),
        done=lambda w, body: _row(Segment, w.crud["segment"]).description == "patched",
    ),
    "v1_segments_destroy": Op(
        "admin",
        lambda w: (f"/api/v1/segments/{w.crud['spare_segment'].pk}/", None),
        (204,),
        done=lambda w, body: not Segment.objects.filter(pk=w.crud["spare_segment"].pk).exists(),
    ),
    "v1_events_list": Op("viewer", _path("/api/v1/events/"), done=lambda w, body: body["count"] >= 2),
    "v1_events_retrieve": Op("viewer", lambda w: (f"/api/v1/events/{w.crud['event'].pk}/", None)),
    "v1_events_create": Op(
        "admin",
        lambda w: ("/api/v1/events/", {"code": "MATRIX", "name": "Made"}),
        (201,),
        done=lambda w, body: Event.objects.filter(code="MATRIX").exists(),
    ),
    "v1_events_update": Op(
        "admin",
        lambda w: (f"/api/v1/events/{w.crud['event'].pk}/", {"code": w.crud["event"].code, "name": "Renamed"}),
        done=lambda w, body: _row(Event, w.crud["event"]).name == "Renamed",
    ),
    "v1_events_partial_update": Op(
        "admin",
        lambda w: (f"/api/v1/events/{w.crud['event'].pk}/", {"name": "Patched"}),
        done=lambda w, body: _row(Event, w.crud["event"]).name == "Patched",
    ),
    "v1_events_destroy": Op(
        "admin",
        lambda w: (f"/api/v1/events/{w.crud['spare_event'].pk}/", None),
        (204,),
        done=lambda w, body: not Event.objects.filter(pk=w.crud["spare_event"].pk).exists(),
    ),
    # imports and exports (the import job is a leads upload, not started; JSON has no file: the allowed caller's 400)
    "v1_imports_list": Op("viewer", _path("/api/v1/imports/"), done=lambda w, body: body["count"] >= 0),
    "v1_imports_create": Op(
        "operator", lambda w: ("/api/v1/imports/", {"kind": "leads"}), (400,), done=lambda w, body: "file" in body
    ),
    "v1_imports_retrieve": Op("viewer", lambda w: (f"/api/v1/imports/{_import_job(w)}/", None)),
    "v1_imports_preview_retrieve": Op(
        "viewer",
        lambda w: (f"/api/v1/imports/{_import_job(w)}/preview/", None),
        done=lambda w, body: body["rows"] == [["a", "a@example.test"]],
    ),
    "v1_imports_report_retrieve": Op("viewer", lambda w: (f"/api/v1/imports/{_import_job(w)}/report/", None)),
    "v1_imports_report_csv_retrieve": Op("viewer", lambda w: (f"/api/v1/imports/{_import_job(w)}/report-csv/", None)),
    "v1_imports_start_create": Op(
        "operator",
        lambda w: (f"/api/v1/imports/{_import_job(w)}/start/", None),
        done=lambda w, body: body["status"] == "queued",
    ),
    "v1_exports_retrieve": Op(
        "viewer",
        _path("/api/v1/exports/leads/"),
        done=lambda w, body: body.decode("utf-8-sig").startswith("lead,lead_id,"),
    ),
    # inbound mail (the seed's paths at the root; no message in the world: the allowed caller gets the 404)
    "results_retrieve": Op("viewer", _path("/results/no-such-email"), (404,)),
    "emails_list": Op("viewer", _path("/emails"), done=lambda w, body: body["count"] == 0),
    "emails_retrieve": Op("viewer", _path("/emails/no-such-email"), (404,)),
    "stats_retrieve": Op("viewer", _path("/stats"), done=lambda w, body: body["totals"]["received"] == 0),
    # last: it revokes the caller's own token
    "v1_auth_logout_create": Op("staff", _path("/api/v1/auth/logout/"), (204,)),
}


@cache
def schema_operations() -> dict[str, str]:
    """operationId → HTTP method, from the schema the API serves."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return {op["operationId"]: method.upper() for ops in schema["paths"].values() for method, op in ops.items()}


def _audit_entry(campaign: Campaign) -> Any:
    with audit_context(source=AuditSource.COMMAND, command_user="matrix"):
        return audit_record(action="campaign.pause", target=campaign)


def build_world() -> World:
    account = SenderAccountFactory()
    campaign = CampaignFactory()
    CampaignAccountFactory(campaign=campaign, account=account)
    SequenceStepFactory(campaign=campaign)
    lead = LeadFactory(campaign=campaign)
    recipient = RecipientFactory(lead=lead)
    template = EmailTemplateFactory()
    work_order = WorkOrderFactory(account=account, template=template)
    workorder_steps_create(work_order=work_order)
    WorkOrder.objects.filter(pk=work_order.pk).update(lock_owner="gone-worker", lock_acquired_at=work_order.created_at,
                                                      lock_expires_at=work_order.created_at)  # fmt: skip
    gated = WorkOrderFactory(account=account, template=template, status=WorkOrder.Status.AWAITING_APPROVAL)
    for step in workorder_steps_create(work_order=gated):
        if step.name == "dry_run":
            stored = default_storage.save(f"workorders/{gated.pk}/dry-run.csv", ContentFile(b"email\n"))
            step.result = {"file": stored}
            step.save(update_fields=["result"])
    return World(
        gated_work_order=gated,
        campaign=campaign, spare_campaign=CampaignFactory(), lead=lead, recipient=recipient, account=account,
        spare_account=SenderAccountFactory(), template=template, spare_template=EmailTemplateFactory(),
        activity=ActivityFactory(campaign=campaign),
        unknown_send=SendRecordFactory(recipient=recipient, account=account, state=SendRecord.State.UNKNOWN),
        work_order=work_order, audit_entry=_audit_entry(campaign),
        crud={
            "contact": ContactFactory(), "spare_contact": ContactFactory(), "segment": SegmentFactory(),
            "spare_segment": SegmentFactory(), "event": EventFactory(), "spare_event": EventFactory(),
            "step": campaign.steps.order_by("order").first(),
            "spare_step": SequenceStepFactory(campaign=campaign, order=5),
            "suppression": SuppressionFactory(), "spare_suppression": SuppressionFactory(),
        },
    )  # fmt: skip


def every_row() -> tuple:
    """A digest of every row of the project's apps (one query): a refused request leaves them exactly as they were."""
    tables = [model._meta.db_table for label in PROJECT_APPS for model in apps.get_app_config(label).get_models()]
    digests = ", ".join(
        f"(SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t)"  # noqa: S608
        for table in map(connection.ops.quote_name, tables)
    )
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {digests}")  # noqa: S608 - the models' own table names, quoted
        return cursor.fetchone()


def client_for(caller: str) -> APIClient:
    client = APIClient()
    if caller == "anonymous":
        return client
    if caller == "bad_token":
        client.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef0123456789abcdef01234567")
        return client
    users = get_user_model().objects
    if caller == "non_staff":  # every permission, but not staff: still refused
        user = users.create_user("matrix-non-staff", is_staff=False, is_superuser=True)
    else:
        user = users.create_user(f"matrix-{caller}", is_staff=True)
        if caller != "staff":
            user.groups.add(Group.objects.get(name=caller))
    client.credentials(HTTP_AUTHORIZATION=api_authorization(user))
    return client


# What an operator's allowed calls above must leave in the audit trail.
AUDITED_FOR_OPERATORS = {
    "campaign.pause", "account.pause", "account.resume", "recipient.mark_replied", "send.resolve",
    "work_order.start", "work_order.stop", "work_order.restart", "work_order.unlock", "work_order.approve",
}  # fmt: skip


def expected_refusal(caller: str, op: Op) -> int | None:
    """401 or 403 when the caller may not, None when it may."""
    if op.min_role == "anyone":
        return None
    if caller in ("anonymous", "bad_token"):
        return 401
    if caller == "non_staff":
        return 403
    return None if RANKS[caller] >= RANKS[op.min_role] else 403


def test_every_schema_operation_has_its_expectation() -> None:
    operations = schema_operations()
    assert sorted(set(operations) - set(OPERATIONS)) == [], "add the new operations to OPERATIONS"
    assert sorted(set(OPERATIONS) - set(operations)) == [], "operations no longer in the schema"


@pytest.mark.parametrize("caller", CALLERS)
def test_each_caller_gets_what_its_role_allows(caller: str) -> None:
    default_cache.clear()  # throttling counts per client; every caller starts fresh
    methods = schema_operations()
    world = build_world()
    client = client_for(caller)
    failures = []
    for operation_id, op in OPERATIONS.items():
        method = methods[operation_id]
        path, body = op.request(world)
        before = every_row() if method != "GET" else None
        response = getattr(client, method.lower())(path, body, format="json")
        refusal = expected_refusal(caller, op)
        is_json = response.get("Content-Type", "").startswith("application/json")
        if response.streaming:  # an export
            content = b"".join(response.streaming_content)
        else:
            content = (response.json() if is_json else response.content) if response.content else None  # files: bytes
        if refusal is not None:
            if response.status_code != refusal:
                failures.append(f"{operation_id}: {response.status_code} instead of {refusal}")
            elif before is not None and every_row() != before:
                failures.append(f"{operation_id}: refused ({refusal}) but rows changed")
        elif response.status_code not in op.allowed_status:
            failures.append(f"{operation_id}: {response.status_code} instead of {op.allowed_status}: {content}")
        elif op.done is not None and not op.done(world, content):
            failures.append(f"{operation_id}: {response.status_code} but the effect is missing: {content}")
    assert failures == []

    # The audit trail shows each effect with the caller and "api"; a refused call leaves no entry.
    from_api = LogEntry.objects.filter(additional_data__source="api")
    recorded = {(entry.actor.username, entry.additional_data["action"]) for entry in from_api.select_related("actor")}
    if RANKS.get(caller, -1) >= RANKS["operator"]:
        assert {(f"matrix-{caller}", action) for action in AUDITED_FOR_OPERATORS} <= recorded
    else:
        assert recorded == set()


def test_without_view_permission_a_missing_row_is_403_not_404() -> None:
    staff = APIClient()
    staff.credentials(HTTP_AUTHORIZATION=api_authorization(get_user_model().objects.create_user("s", is_staff=True)))
    viewer_user = get_user_model().objects.create_user("v", is_staff=True)
    viewer_user.groups.add(Group.objects.get(name="viewer"))
    viewer = APIClient()
    viewer.credentials(HTTP_AUTHORIZATION=api_authorization(viewer_user))
    for path in ("/api/v1/campaigns/999999/", "/api/v1/workorders/999999/", "/api/v1/send-records/999999/"):
        assert staff.get(path).status_code == 403, path
        assert viewer.get(path).status_code == 404, path
    assert viewer.post("/api/v1/campaigns/999999/pause/", {}, format="json").status_code == 403


def test_an_inactive_staff_user_is_refused() -> None:
    user = get_user_model().objects.create_user("gone", is_staff=True, is_superuser=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=api_authorization(user))
    assert client.get("/api/v1/campaigns/").status_code == 200
    user.is_active = False
    user.save()
    assert client.get("/api/v1/campaigns/").status_code in (401, 403)


class _UndeclaredActionViewSet(viewsets.GenericViewSet):
    queryset = Campaign.objects.all()

    @action(detail=False, methods=["post"])
    def launch(self, request):
        Campaign.objects.update(name="launched")
        return Response({"launched": True})


def test_an_action_that_declares_no_permission_is_refused_even_to_a_superuser() -> None:
    CampaignFactory(name="untouched")
    superuser = get_user_model().objects.create_user("root", is_staff=True, is_superuser=True)
    request = APIRequestFactory().post("/probe/launch/", {}, format="json")
    force_authenticate(request, user=superuser)

    response = _UndeclaredActionViewSet.as_view({"post": "launch"})(request)

    assert response.status_code == 403
    assert Campaign.objects.get().name == "untouched"


def test_schema_and_docs_are_for_staff(client) -> None:
    assert client.get("/api/schema/").status_code == 401
    for docs in ("/api/docs/", "/api/redoc/"):
        response = client.get(docs)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/?next=/api/"), docs
    user = get_user_model().objects.create_user("docs-reader", is_staff=True)
    staff = APIClient()
    staff.credentials(HTTP_AUTHORIZATION=api_authorization(user))
    assert staff.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").status_code == 200
    client.force_login(user)
    assert client.get("/api/docs/").status_code == 200 and client.get("/api/redoc/").status_code == 200
