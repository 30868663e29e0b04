"""Beat's sweeper (task `workorders.sweep`): takes over work orders whose worker died and wakes sleeping ones that
are due, without an operator; and the wake of work orders sleeping on an account whose limits were reset."""

from datetime import timedelta

from django.db import transaction
from django.db.models import Q

from emailsys import clock
from workorders.models import WorkOrder, WorkOrderStep
from workorders.services.locking import lease_seconds
from workorders.services.steps import ACCOUNT_WAIT
from workorders.services.stream import workorder_resume

Status = WorkOrder.Status


def workorders_sweep() -> list[int]:
    """Beat's sweeper: a work order working with an expired (or no) lease, or sleeping and due, is resumed
    (`workorder_resume`: its stalled event re-dispatched, or a "resume" event), at most once per lease length,
    so a dead worker's work is taken over without an operator."""
    now = clock.now()
    lease = timedelta(seconds=lease_seconds())
    no_live_lease = Q(lock_owner="") | Q(lock_expires_at__lt=now)
    due = (Q(status=Status.WORKING) | Q(status=Status.SLEEPING, resume_at__lte=now)) & no_live_lease
    not_recent = Q(swept_at__isnull=True) | Q(swept_at__lt=now - lease)
    resumed = []
    for work_order_id in WorkOrder.objects.filter(due, not_recent).values_list("id", flat=True):
        with transaction.atomic():
            if WorkOrder.objects.filter(due, not_recent, id=work_order_id).update(swept_at=now):
                workorder_resume(work_order_id=work_order_id)
                resumed.append(work_order_id)
    return resumed


def workorders_wake_for_account(*, account_id: int) -> list[int]:
    """Resumes now (`workorder_resume`) every work order sleeping because this account could not send (a Test, Send
    or Send-Continuously step waiting for its limit or wait), e.g. after an operator reset the account's limits;
    the ids woken. A Send-Continuously step sleeping between rounds keeps its interval. Emits in the caller's
    transaction: the resume exists if and only if the caller's change does."""
    now = clock.now()
    waiting = WorkOrderStep.objects.filter(
        status=WorkOrderStep.Status.SLEEPING,
        message__startswith=ACCOUNT_WAIT,
        name__in=[WorkOrderStep.Name.TEST, WorkOrderStep.Name.SEND, WorkOrderStep.Name.SEND_CONTINUOUSLY],
    )
    sleeping = WorkOrder.objects.filter(
        status=Status.SLEEPING, account_id=account_id, id__in=waiting.values("work_order_id")
    )
    woken = []
    for work_order_id in sleeping.order_by("id").values_list("id", flat=True):
        with transaction.atomic():
            if sleeping.filter(id=work_order_id).update(resume_at=now, swept_at=now):
                workorder_resume(work_order_id=work_order_id)
                woken.append(work_order_id)
    return woken
