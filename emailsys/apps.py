from importlib import import_module

from django.apps import AppConfig
from django.apps import apps as global_apps
from django.db.models.signals import post_migrate

# Data migrations that create periodic tasks (each defines `create_periodic_task(apps, schema_editor)`).
PERIODIC_TASK_MIGRATIONS = (
    "emailsys.migrations.0001_heartbeat_periodic_task",
    "emailsys.migrations.0002_eventbus",
    "campaigns.migrations.0002_dispatch_periodic_task",
)


def restore_periodic_tasks(sender, **kwargs) -> None:
    """After every migrate and every flush (test teardown), missing periodic tasks are created again by their
    own data migration's function; existing ones, as edited in the admin, are left alone."""
    for module in PERIODIC_TASK_MIGRATIONS:
        import_module(module).create_periodic_task(global_apps, None)


class EmailsysConfig(AppConfig):
    """The project package as an app: operations (health, metrics, live updates, mail capture)."""

    name = "emailsys"
    verbose_name = "Operations"

    def ready(self) -> None:
        from emailsys.metrics import register_collector

        register_collector()
        # Listen to the app that owns the periodic task table: its tables exist when the signal comes.
        beat_app = global_apps.get_app_config("django_celery_beat")
        post_migrate.connect(restore_periodic_tasks, sender=beat_app, dispatch_uid="emailsys.restore_periodic_tasks")
