"""A work order's recorded state, written by operator actions and the pipeline alike: its steps (created once,
in pipeline order), its fields, and a stop taking effect."""

from typing import Any

from emailsys import clock
from emailsys.live import live_version_bump
from workorders.models import WorkOrder, WorkOrderStep

Name, Status = WorkOrderStep.Name, WorkOrderStep.Status
PIPELINE = (Name.COUNT, Name.PREPARE, Name.DRY_RUN, Name.TEST, Name.SEND, Name.SEND_CONTINUOUSLY)


def workorder_steps_create(*, work_order: WorkOrder) -> list[WorkOrderStep]:
    """The pipeline's steps (Send-Continuously only if the work order sends continuously); idempotent."""
    names = [name for name in PIPELINE if name != Name.SEND_CONTINUOUSLY or work_order.send_continuously]
    WorkOrderStep.objects.bulk_create(
        [WorkOrderStep(work_order=work_order, name=name, order=index) for index, name in enumerate(names, 1)],
        ignore_conflicts=True,
    )
    return list(work_order.steps.order_by("order"))


def workorder_update(*, work_order: WorkOrder, **values: Any) -> None:
    """Writes `values` to the row and to `work_order`, so the caller's copy stays current; the same UPDATE
    increments the live version (pages keep the newest state)."""
    for name, value in values.items():
        setattr(work_order, name, value)
    WorkOrder.objects.filter(id=work_order.id).update(**values, updated_at=clock.now(), **live_version_bump())


def workorder_interrupt(*, work_order: WorkOrder) -> None:
    """A stop took effect: working or sleeping steps become interrupted, the work order too."""
    now = clock.now()
    WorkOrderStep.objects.filter(work_order=work_order, status__in=[Status.WORKING, Status.SLEEPING]).update(
        status=Status.INTERRUPTED, ended_at=now, updated_at=now
    )
    workorder_update(work_order=work_order, status=WorkOrder.Status.INTERRUPTED, resume_at=None)
