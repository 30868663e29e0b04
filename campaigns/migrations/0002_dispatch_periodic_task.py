"""Beat's periodic task that ticks the dispatcher; its interval is editable in the admin afterwards."""

from django.conf import settings
from django.db import migrations

DISPATCH_NAME = "campaigns: dispatch"


def create_periodic_task(apps, schema_editor) -> None:
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    interval, _ = IntervalSchedule.objects.get_or_create(every=settings.CAMPAIGN_DISPATCH_INTERVAL, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=DISPATCH_NAME,
        defaults={
            "task": "campaigns.dispatch_due",
            "interval": interval,
            "queue": "default",
            "description": "Claims due leads and enqueues their sends in batches on the sending pool.",
        },
    )


def delete_dispatch_task(apps, schema_editor) -> None:
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=DISPATCH_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_periodic_task, delete_dispatch_task)]
