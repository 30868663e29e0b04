"""Beat's periodic task that sweeps work orders: an expired lease while working, or a sleeping one due, is
re-dispatched without operator action. Its interval is editable in the admin afterwards."""

from django.db import migrations

SWEEP_NAME = "workorders: sweep"
SWEEP_INTERVAL_SECONDS = 5


def create_periodic_task(apps, schema_editor) -> None:
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    interval, _ = IntervalSchedule.objects.get_or_create(every=SWEEP_INTERVAL_SECONDS, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=SWEEP_NAME,
        defaults={
            "task": "workorders.sweep",
            "interval": interval,
            "queue": "workorders",
            "description": "Re-dispatches work orders whose lease expired while working, and sleeping ones now due.",
        },
    )


def delete_periodic_task(apps, schema_editor) -> None:
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=SWEEP_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("workorders", "0002_workorders_steps_sends"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_periodic_task, delete_periodic_task)]
