from django.apps import AppConfig
from django.apps import apps as global_apps
from django.db.models.signals import post_migrate


def periodic_tasks_restore(sender, *, apps=global_apps, using: str = "default", **kwargs) -> None:
    """After every migrate and every flush (test teardown), missing periodic tasks are created again from their
    one declaration (emailsys.periodic); existing ones, as edited in the admin, are left alone. Skipped when the
    migrated state has no periodic task table (e.g. `migrate django_celery_beat zero`). Flush sends no `apps`."""
    try:
        apps.get_model("django_celery_beat", "PeriodicTask")
    except LookupError:
        return
    from emailsys.periodic import periodic_tasks_ensure

    periodic_tasks_ensure(using=using)


def roles_restore(sender, *, apps=global_apps, using: str = "default", **kwargs) -> None:
    """After every migrate and flush, the role groups get their permissions (emailsys.roles). Runs once, for the
    last app: by then every app's permissions exist (auth creates them on the same signal, listening first)."""
    last = [config for config in global_apps.get_app_configs() if config.models_module is not None][-1]
    if sender.label != last.label:
        return
    try:
        apps.get_model("auth", "Permission")
    except LookupError:
        return
    from emailsys.roles import roles_ensure

    roles_ensure(using=using)


class EmailsysConfig(AppConfig):
    """The project package as an app: operations (health, metrics, live updates, mail capture)."""

    name = "emailsys"
    verbose_name = "Operations"

    def ready(self) -> None:
        from emailsys import checks  # noqa: F401 - registers the deployment checks

        # Importing metrics connects its Celery signal handlers (per-task counts and latency, in every worker);
        # the collector serves them on /metrics.
        from emailsys.metrics import register_collector

        register_collector()
        from emailsys.dashboard import dashboard_live_register

        dashboard_live_register()
        # Listen to the app that owns the periodic task table: its tables exist when the signal comes.
        beat_app = global_apps.get_app_config("django_celery_beat")
        post_migrate.connect(periodic_tasks_restore, sender=beat_app, dispatch_uid="emailsys.periodic_tasks_restore")
        post_migrate.connect(roles_restore, dispatch_uid="emailsys.roles_restore")
