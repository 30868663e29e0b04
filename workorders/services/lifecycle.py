"""A work order's lifecycle, as operators drive it (admin, API): create (validated by `WorkOrder.clean`), start,
stop, restart from a step, approve Send (the review gate, `steps`), unlock. Each change is committed with the event
it triggers and broadcast after commit; the pipeline itself (`steps`) runs from those events on a worker."""

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from audit.actions import AuditAction
from audit.services import audit_active, audit_record
from emailsys import clock
from emailsys.live import live_version_bump
from workorders.models import WorkOrder, WorkOrderStep
from workorders.services.live import workorder_broadcast
from workorders.services.locking import workorder_lock_is_live
from workorders.services.state import PIPELINE, workorder_interrupt, workorder_steps_create
from workorders.services.stream import workorder_event_emit

Status = WorkOrder.Status
RUNNING = (Status.QUEUED, Status.WORKING)


def workorder_create(*, created_by=None, **fields: Any) -> WorkOrder:
    """Validates (fields, languages, testers, constraints), saves and creates its steps. The sub-event defaults
    to the event's."""
    work_order = WorkOrder(created_by=created_by, **fields)
    if not work_order.sub_event and work_order.event_id:
        work_order.sub_event = work_order.event.sub_event
    work_order.full_clean()
    with transaction.atomic():
        work_order.save()
        workorder_steps_create(work_order=work_order)
        workorder_broadcast(work_order_id=work_order.id)
    return work_order


def _locked(work_order_id: int) -> WorkOrder:
    return WorkOrder.objects.select_for_update().get(id=work_order_id)


def workorder_start(*, work_order_id: int) -> WorkOrder:
    """Queues the pipeline from its first unfinished step ("start" event). Refused while it runs, and while it
    awaits approval (Start must not be a way round the review gate)."""
    with transaction.atomic():
        work_order = _locked(work_order_id)
        if work_order.status in RUNNING or workorder_lock_is_live(work_order):
            raise ValidationError(f"Work order {work_order.id} is already {work_order.status}; stop it first.")
        if work_order.status == Status.AWAITING_APPROVAL:
            raise ValidationError(
                f"Work order {work_order.id} is awaiting approval: press Approve to send, or restart from a step."
            )
        workorder_steps_create(work_order=work_order)
        WorkOrder.objects.filter(id=work_order.id).update(
            stop_requested=False, status=Status.QUEUED, resume_at=None, **live_version_bump()
        )
        workorder_event_emit(work_order_id=work_order.id, kind="start")
        changes = {"status": [work_order.status, Status.QUEUED]}
        audit_record(action=AuditAction.WORK_ORDER_START, target=work_order, changes=changes)
        workorder_broadcast(work_order_id=work_order.id)
    return WorkOrder.objects.get(id=work_order_id)


def workorder_stop(*, work_order_id: int) -> WorkOrder:
    """Sets `stop_requested`; the lease holder honours it within a second. With no live holder (queued,
    sleeping, or its worker died) the stop takes effect here and now."""
    with transaction.atomic():
        work_order = _locked(work_order_id)
        WorkOrder.objects.filter(id=work_order.id).update(stop_requested=True, **live_version_bump())
        if not workorder_lock_is_live(work_order) and work_order.status in (*RUNNING, Status.SLEEPING):
            workorder_interrupt(work_order=work_order)
        audit_record(action=AuditAction.WORK_ORDER_STOP, target=work_order, detail={"status": work_order.status})
        workorder_broadcast(work_order_id=work_order.id)
    return WorkOrder.objects.get(id=work_order_id)


def workorder_restart(*, work_order_id: int, step: str) -> WorkOrder:
    """Runs again from `step` (a finished step can be re-run): it and every later step go back to ready, then a
    "restart" event queues the pipeline. Refused while it runs; send records keep anyone from a second email.
    From Test or earlier the approval of Send is cleared: it was of the test emails that will be sent again."""
    with transaction.atomic():
        work_order = _locked(work_order_id)
        steps = {s.name: s for s in workorder_steps_create(work_order=work_order)}
        if step not in steps:
            raise ValidationError(f"{step!r} is not a step of work order {work_order.id}; use one of: "
                                  f"{', '.join(steps)}.")  # fmt: skip
        if work_order.status in RUNNING or workorder_lock_is_live(work_order):
            raise ValidationError(f"Work order {work_order.id} is {work_order.status}; stop it before restarting.")
        WorkOrderStep.objects.filter(work_order=work_order, order__gte=steps[step].order).update(
            status=WorkOrderStep.Status.READY, message="", done=0, total=0, started_at=None, ended_at=None,
            updated_at=clock.now(),
        )  # fmt: skip
        approval = {}
        if PIPELINE.index(step) <= PIPELINE.index(WorkOrderStep.Name.TEST):
            approval = {"approved_at": None, "approved_by": None}
        WorkOrder.objects.filter(id=work_order.id).update(
            stop_requested=False, status=Status.QUEUED, resume_at=None, **approval, **live_version_bump()
        )
        workorder_event_emit(work_order_id=work_order.id, kind="restart", payload={"step": step})
        audit_record(
            action=AuditAction.WORK_ORDER_RESTART,
            target=work_order,
            changes={"status": [work_order.status, Status.QUEUED]},
            detail={"step": step},
        )
        workorder_broadcast(work_order_id=work_order.id)
    return WorkOrder.objects.get(id=work_order_id)


def workorder_approve(*, work_order_id: int, approved_by) -> WorkOrder:
    """The review gate's Approve: only a work order awaiting approval (it stopped after Test); records who and when,
    queues the pipeline ("approve" event: Send runs next), audits and broadcasts. The row returned is fresh: its
    `live_version` is what an optimistic button waits for."""
    with transaction.atomic():
        work_order = _locked(work_order_id)
        if work_order.status != Status.AWAITING_APPROVAL:
            raise ValidationError(
                f"Work order {work_order.id} is {work_order.get_status_display().lower()}; only a work order "
                "awaiting approval (stopped after its Test step) can be approved."
            )
        now = clock.now()
        WorkOrder.objects.filter(id=work_order.id).update(
            approved_at=now, approved_by=approved_by, stop_requested=False, status=Status.QUEUED, resume_at=None,
            **live_version_bump(),
        )  # fmt: skip
        workorder_event_emit(work_order_id=work_order.id, kind="approve")
        audit_record(
            action=AuditAction.WORK_ORDER_APPROVE,
            target=work_order,
            changes={"status": [work_order.status, Status.QUEUED]},
            detail={"approved_at": now.isoformat()},
        )
        workorder_broadcast(work_order_id=work_order.id)
    return WorkOrder.objects.get(id=work_order_id)


def workorder_unlock(*, work_order_id: int) -> bool:
    """Clears the lease (an operator's decision that its holder is gone): a live holder notices within a second
    and stops; the sweeper resumes a work order that was working. True if there was a lock."""
    with transaction.atomic():
        cleared = (
            WorkOrder.objects.filter(id=work_order_id)
            .exclude(lock_owner="")
            .update(lock_owner="", lock_acquired_at=None, lock_expires_at=None, **live_version_bump())
        )
        if cleared and audit_active():
            audit_record(action=AuditAction.WORK_ORDER_UNLOCK, target=WorkOrder.objects.get(id=work_order_id))
        workorder_broadcast(work_order_id=work_order_id)
    return bool(cleared)
