"""The review gate before Send: a work order stops after Test in *awaiting approval* until an operator with
`workorders.approve_workorder` approves it; auto-approved ones send in one go; a new Test clears the approval.
Real PostgreSQL and an aiosmtpd server; the pipeline runs in this process (`workorder_run`)."""

import pytest
from auditlog.models import LogEntry
from django.core.exceptions import ValidationError

from audit.actions import AuditAction
from audit.context import AuditSource, audit_context
from emailsys.models import OutboxEvent
from workorders.models import MailingSend, WorkOrder, WorkOrderStep
from workorders.services.lifecycle import workorder_approve, workorder_restart, workorder_start, workorder_stop
from workorders.services.steps import workorder_run
from workorders.tests.test_steps import audience, make_work_order, steps

pytestmark = pytest.mark.django_db(transaction=True)
Status = WorkOrder.Status
TESTER = "tester@example.test"


def gated_work_order(smtp, **overrides) -> WorkOrder:
    return make_work_order(smtp, **{"auto_approve": False, "testers": [TESTER], **overrides})


def rcpts(smtp) -> list[str]:
    return sorted(mail.rcpt_tos[0] for mail in smtp.snapshot())


def outbox_kinds(work_order: WorkOrder) -> list[str]:
    return list(OutboxEvent.objects.filter(stream="workorder", key=str(work_order.id)).order_by("id")
                .values_list("kind", flat=True))  # fmt: skip


def test_the_pipeline_stops_after_test_until_approved_then_sends(smtp, admin_user):
    contacts = audience(en=2, fr=1)
    work_order = gated_work_order(smtp)

    assert workorder_run(work_order_id=work_order.id) == "awaiting_approval"

    work_order.refresh_from_db()
    assert (work_order.status, work_order.lock_owner, work_order.approved_at) == (Status.AWAITING_APPROVAL, "", None)
    by_step = steps(work_order)
    assert [by_step[name].status for name in ("count", "prepare", "dry_run", "test")] == ["complete"] * 4
    assert by_step["send"].status == WorkOrderStep.Status.READY
    assert by_step["send"].message.startswith("awaiting approval")
    assert rcpts(smtp) == [TESTER, TESTER]  # the test emails (one per language), nothing real
    assert not MailingSend.objects.filter(is_test=False).exists()
    assert workorder_run(work_order_id=work_order.id) == "awaiting_approval"  # a duplicate event sends nothing
    assert len(smtp.snapshot()) == 2

    with pytest.raises(ValidationError, match="press Approve to send, or restart from a step"):
        workorder_start(work_order_id=work_order.id)

    version_before = WorkOrder.objects.get(id=work_order.id).live_version
    with audit_context(source=AuditSource.COMMAND, command_user="reviewer"):
        approved = workorder_approve(work_order_id=work_order.id, approved_by=admin_user)
    assert (approved.status, approved.approved_by, approved.stop_requested) == (Status.QUEUED, admin_user, False)
    assert approved.approved_at is not None and approved.live_version > version_before
    assert outbox_kinds(work_order)[-1] == "approve"
    entry = LogEntry.objects.get(additional_data__action=AuditAction.WORK_ORDER_APPROVE)
    assert (entry.object_pk, entry.additional_data["actor"]) == (str(work_order.id), "reviewer")

    assert workorder_run(work_order_id=work_order.id) == "complete"
    assert rcpts(smtp) == sorted([TESTER, TESTER, *(c.email for c in contacts)])
    assert steps(work_order)["send"].message == "sent: 3 sent"

    with pytest.raises(ValidationError, match="only a work order awaiting approval"):
        workorder_approve(work_order_id=work_order.id, approved_by=admin_user)


def test_approve_is_refused_unless_awaiting_approval(smtp, admin_user):
    work_order = gated_work_order(smtp)
    with pytest.raises(ValidationError, match=r"is ready; only a work order awaiting approval"):
        workorder_approve(work_order_id=work_order.id, approved_by=admin_user)
    workorder_start(work_order_id=work_order.id)
    with pytest.raises(ValidationError, match=r"is queued; only a work order awaiting approval"):
        workorder_approve(work_order_id=work_order.id, approved_by=admin_user)
    assert WorkOrder.objects.get(id=work_order.id).approved_at is None


def test_an_auto_approved_work_order_sends_in_one_go(smtp):
    contacts = audience(en=1, fr=1)
    work_order = gated_work_order(smtp, auto_approve=True)

    assert workorder_run(work_order_id=work_order.id) == "complete"
    assert rcpts(smtp) == sorted([TESTER, TESTER, *(c.email for c in contacts)])


def test_restart_from_test_or_earlier_clears_the_approval_and_from_send_keeps_it(smtp, admin_user):
    audience(en=1, fr=0)
    work_order = gated_work_order(smtp, subjects={"en": ""})
    workorder_run(work_order_id=work_order.id)
    workorder_approve(work_order_id=work_order.id, approved_by=admin_user)
    assert workorder_run(work_order_id=work_order.id) == "complete"

    workorder_restart(work_order_id=work_order.id, step="send")
    assert WorkOrder.objects.get(id=work_order.id).approved_by == admin_user
    assert workorder_run(work_order_id=work_order.id) == "complete"  # approved since Test last ran: no stop

    workorder_restart(work_order_id=work_order.id, step="test")
    row = WorkOrder.objects.get(id=work_order.id)
    assert (row.approved_at, row.approved_by) == (None, None)
    assert workorder_run(work_order_id=work_order.id) == "awaiting_approval"
    assert rcpts(smtp).count(TESTER) == 2  # a second Test run: the tester got the email again


def test_a_stop_while_awaiting_approval_does_not_survive_an_approve(smtp, admin_user):
    audience(en=1, fr=0)
    work_order = gated_work_order(smtp, subjects={"en": ""})
    workorder_run(work_order_id=work_order.id)
    workorder_stop(work_order_id=work_order.id)
    assert WorkOrder.objects.get(id=work_order.id).status == Status.AWAITING_APPROVAL  # nothing was running

    workorder_approve(work_order_id=work_order.id, approved_by=admin_user)
    assert workorder_run(work_order_id=work_order.id) == "complete"


def test_a_restart_from_an_early_step_while_awaiting_approval_runs_to_the_gate_again(smtp, admin_user):
    audience(en=1, fr=0)
    work_order = gated_work_order(smtp, subjects={"en": ""})
    workorder_run(work_order_id=work_order.id)

    workorder_restart(work_order_id=work_order.id, step="dry_run")
    assert workorder_run(work_order_id=work_order.id) == "awaiting_approval"
    assert not MailingSend.objects.filter(is_test=False).exists()
