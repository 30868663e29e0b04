"""Beat's sweeper (task `workorders.sweep`): takes over work orders whose worker died and wakes sleeping ones that
are due, without an operator."""

from datetime import timedelta

from django.db import transaction
from django.db.models import Q

from emailsys import clock
from workorders.models import WorkOrder
from workorders.services.locking import lease_seconds
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
