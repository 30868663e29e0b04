"""Creates beat's heartbeat periodic task; editable (interval, enabled) in the admin afterwards."""

from django.db import migrations

HEARTBEAT_NAME = "emailsys: heartbeat"


def create_periodic_task(apps, schema_editor) -> None:
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_10s, _ = IntervalSchedule.objects.get_or_create(every=10, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=HEARTBEAT_NAME,
        defaults={
            "task": "emailsys.heartbeat",
            "interval": every_10s,
            "queue": "default",
            "description": "Proves beat, the broker and the default pool work; /healthz shows its age.",
        },
    )


def delete_heartbeat(apps, schema_editor) -> None:
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=HEARTBEAT_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("django_celery_beat", "0019_alter_periodictasks_options")]

    operations = [migrations.RunPython(create_periodic_task, delete_heartbeat)]
