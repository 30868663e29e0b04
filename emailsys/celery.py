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
# Celery's Django fix-up closes every database connection before and after each task (celery#9824 took back the
# CONN_MAX_AGE-aware close), so a prefork worker connected anew for every task: a PostgreSQL backend started and the
# connection set up, about a third of a one-message classification task. With DB_REUSE_MAX the fix-up leaves the
# connections alone (it still closes them after that many tasks, and after a fork); Django's own rule runs around
# each task instead, as around each request: CONN_MAX_AGE, the health check, a connection left broken or inside a
# transaction closed.
app.conf.CELERY_DB_REUSE_MAX = 10_000


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


@signals.task_prerun.connect
@signals.task_postrun.connect
def _database_connections_check(task=None, **kwargs) -> None:
    if task is not None and getattr(task.request, "is_eager", False):
        return  # an eager task runs inside its caller's transaction (a test's): not ours to close
    from django.db import close_old_connections

    close_old_connections()


@inspect_command(name="conf")
def conf(state, **kwargs) -> dict[str, str]:
    """Replaces Celery's `inspect conf`, which Flower shows on a worker's page: with Django's settings as the config
    it lists every setting, and its filter lets URLs with passwords through (the cache's and channel layer's Redis
    URL, CELERY_BROKER_URL). Workers publish no settings; the deployment's environment is where to look."""
    return {"settings": "not published by emailsys workers (they hold passwords): see emailsys/celery.py"}
