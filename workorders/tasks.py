"""Thin Celery entry points on the `workorders` queue (routed by CELERY_TASK_ROUTES "workorders.*")."""

from celery import shared_task

from workorders.services.operations import workorders_sweep
from workorders.services.steps import workorder_process


@shared_task(name="workorders.process", ignore_result=True)
def process(work_order_id: int, kind: str = "resume") -> str:
    """The direct path while the event bus is not installed (`services.dispatch`); the lease serialises runs."""
    return workorder_process(work_order_id=work_order_id)


@shared_task(name="workorders.sweep", ignore_result=True)
def sweep() -> list[int]:
    """Run by beat (periodic task created by migration 0003)."""
    return workorders_sweep()
