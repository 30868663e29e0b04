"""Thin Celery entry points; unrouted names run on the `default` queue (CELERY_TASK_ROUTES)."""

from celery import shared_task

from transfers.services.imports import IMPORT_TIME_LIMIT_SECONDS, import_job_run


@shared_task(
    name="transfers.import_job_run",
    ignore_result=True,
    time_limit=IMPORT_TIME_LIMIT_SECONDS,
    soft_time_limit=IMPORT_TIME_LIMIT_SECONDS - 30,
)
def import_job_run_task(job_id: int) -> None:
    """Queued by `import_job_start` after commit; the claim in the service makes a redelivery harmless."""
    import_job_run(job_id=job_id)
