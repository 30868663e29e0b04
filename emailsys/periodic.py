"""Beat's periodic tasks, declared once: every django-celery-beat row this project relies on, and the service that
creates the missing ones after each migrate (and each flush in tests, emailsys.apps).

A row, once created, belongs to the operator: its interval and enabled flag are edited in the admin and never
overwritten here. The interval setting only gives a newly created row its first interval. Names are the rows'
identity: renaming a spec would leave the old row running and create a second one.
"""

from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask


@dataclass(frozen=True)
class PeriodicTaskSpec:
    name: str
    task: str
    # Name of the Django setting holding the first interval, in seconds.
    interval_setting: str
    # The queue beat publishes to; it must be the task's route in CELERY_TASK_ROUTES (checked by the tests).
    queue: str
    description: str
    # A message beat sent is dropped unrun after this many seconds (None: kept): for tasks whose backlog is useless.
    expire_seconds: int | None = None

    def interval_seconds(self) -> int:
        return int(getattr(settings, self.interval_setting))


PERIODIC_TASKS: tuple[PeriodicTaskSpec, ...] = (
    PeriodicTaskSpec(
        name="emailsys: heartbeat",
        task="emailsys.heartbeat",
        interval_setting="HEARTBEAT_INTERVAL",
        queue="default",
        description="Proves beat, the broker and the default pool work; /healthz shows its age.",
    ),
    PeriodicTaskSpec(
        name="emailsys: sweep events",
        task="emailsys.sweep_events",
        interval_setting="EVENT_SWEEP_INTERVAL",
        queue="default",
        description="Publishes outbox rows a crash left unpublished; re-sends event tasks a broker lost.",
    ),
    PeriodicTaskSpec(
        name="campaigns: dispatch",
        task="campaigns.dispatch_due",
        interval_setting="CAMPAIGN_DISPATCH_INTERVAL",
        queue="default",
        description="Claims due leads and enqueues their sends in batches on the sending pool.",
    ),
    PeriodicTaskSpec(
        name="workorders: sweep",
        task="workorders.sweep",
        interval_setting="WORKORDER_SWEEP_INTERVAL",
        queue="workorders",
        description="Re-dispatches work orders whose lease expired while working, and sleeping ones now due.",
    ),
    PeriodicTaskSpec(
        name="emailsys: dashboard refresh",
        task="emailsys.dashboard_refresh",
        interval_setting="DASHBOARD_REFRESH_INTERVAL",
        queue="default",
        description="Probes workers, queues, beat and the SQS bridge for the dashboard and publishes it to its pages.",
        expire_seconds=30,
    ),
    PeriodicTaskSpec(
        name="processing: fallback sync",
        task="processing.fallback_sync",
        interval_setting="INBOUND_FALLBACK_SYNC_INTERVAL",
        queue="inbound_backfill",
        description="Syncs every enabled mailbox from its cursor, so a lost webhook is caught within the interval; "
        "enqueues again stored messages whose classification task was lost.",
        expire_seconds=60,
    ),
    PeriodicTaskSpec(
        name="processing: IMAP poll",
        task="processing.imap_poll_all",
        interval_setting="IMAP_POLL_INTERVAL",
        queue="inbound_backfill",
        description="Polls every enabled IMAP sender mailbox from its UID cursor (IDLE only wakes a poll sooner).",
        expire_seconds=60,
    ),
)


def periodic_tasks_ensure(*, using: str = "default") -> list[str]:
    """Creates each declared periodic task that has no row of its name, with the interval its setting gives now;
    returns the names created. Existing rows are left exactly as they are (an operator's interval, enabled flag,
    queue), so running it after every migrate is safe and idempotent."""
    created = []
    with transaction.atomic(using=using):
        for spec in PERIODIC_TASKS:
            if PeriodicTask.objects.using(using).filter(name=spec.name).exists():
                continue
            PeriodicTask.objects.using(using).create(
                name=spec.name,
                task=spec.task,
                interval=_interval_schedule_get(every=spec.interval_seconds(), using=using),
                queue=spec.queue,
                description=spec.description,
                expire_seconds=spec.expire_seconds,
            )
            created.append(spec.name)
    return created


def _interval_schedule_get(*, every: int, using: str) -> IntervalSchedule:
    """The schedule of `every` seconds, shared with any row already on it. Not get_or_create: the admin lets an
    operator create duplicate schedules, and get() would then fail."""
    schedules = IntervalSchedule.objects.using(using)
    existing = schedules.filter(every=every, period=IntervalSchedule.SECONDS).order_by("id").first()
    return existing or schedules.create(every=every, period=IntervalSchedule.SECONDS)
