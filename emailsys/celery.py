"""The Celery application: configured from Django settings (CELERY_*), tasks autodiscovered per app.

Workers: one pool per queue, e.g. `celery -A emailsys worker -Q sending -n sending@%h --pool threads`.

A leaf among our modules: everything that builds on Celery imports this app, never the other way round. Per-task
metrics (`emailsys.metrics`) connect to Celery's signals from `EmailsysConfig.ready`, which runs in a worker too:
Celery's Django fix-up calls `django.setup()` before the worker imports task modules.
"""

import os

from celery import Celery, signals
from celery.worker.control import inspect_command

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailsys.settings.local")

app = Celery("emailsys")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _logging_adjust(logger, **kwargs) -> None:
    """Celery replaced the root logger's handlers (workers, beat): the same chatter filter and format as LOGGING."""
    from emailsys.logs import celery_logging_adjust

    celery_logging_adjust(logger)


@signals.celeryd_init.connect
def _logging_early(**kwargs) -> None:
    """Before Celery sets up its logging, a worker may warn (running as root): that warning follows LOGGING too."""
    from emailsys.logs import worker_logging_early

    worker_logging_early()


@signals.celeryd_after_setup.connect
def _banner_as_log_line(sender, instance, **kwargs) -> None:
    """With LOG_FORMAT=json a worker prints no multi-line banner: every line of its output stays one JSON object."""
    from emailsys.logs import worker_banner_replace

    worker_banner_replace(instance)


@inspect_command(name="conf")
def conf(state, **kwargs) -> dict[str, str]:
    """Replaces Celery's `inspect conf`, which Flower shows on a worker's page: with Django's settings as the config
    it lists every setting, and its filter lets URLs with passwords through (the cache's and channel layer's Redis
    URL, CELERY_BROKER_URL). Workers publish no settings; the deployment's environment is where to look."""
    return {"settings": "not published by emailsys workers (they hold passwords): see emailsys/celery.py"}
