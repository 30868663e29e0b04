"""Thin Celery entry points on the `workorders` queue (routed by CELERY_TASK_ROUTES "workorders.*"). Work orders
themselves run from their events (`emailsys.run_event` → `services.events.workorder_event_handle`)."""

from celery import shared_task

from workorders.services.sweep import workorders_sweep


@shared_task(name="workorders.sweep", ignore_result=True)
def sweep() -> list[int]:
    """Run by beat (periodic task "workorders: sweep", declared in emailsys/periodic.py)."""
    return workorders_sweep()
