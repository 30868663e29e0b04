"""Logging as every process ships it (settings.LOGGING, and Celery's own setup in workers and beat):

- Periodic-task chatter at DEBUG: Celery logs "Task … received" and "Task … succeeded in …" for every task, and beat
  "Scheduler: Sending due task …" for every tick, at INFO. For the tasks beat runs every few seconds
  (emailsys.periodic) that was a third of the demo's log; `PeriodicChatterFilter` demotes those records to DEBUG,
  so LOG_LEVEL=DEBUG still shows them. Their failures, retries and our own INFO lines are left alone.
- LOG_FORMAT=json: one JSON object per line (python-json-logger), with time, level, logger and message, for a
  log shipper; plain text otherwise.

Django applies LOGGING in every process; Celery then replaces the root logger's handlers in workers and beat, so
`celery_logging_adjust` (emailsys/celery.py connects it to Celery's after_setup_*logger signals) gives Celery's
handlers the same filter and formatter.
"""

import logging
from functools import cache

LOG_FORMATS = ("plain", "json")
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
JSON_RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}

# Celery's per-task lines (celery/app/trace.py LOG_RECEIVED, LOG_SUCCESS) and beat's per-tick line.
_TASK_LINE_LOGGERS = {"celery.worker.strategy", "celery.app.trace"}
_BEAT_LOGGER = "celery.beat"
_BEAT_SENDING = "Scheduler: Sending due task %s (%s)"


@cache
def periodic_task_names() -> frozenset[str]:
    """The tasks beat runs (emailsys.periodic.PERIODIC_TASKS); read once, when the first record asks."""
    from emailsys.periodic import PERIODIC_TASKS

    return frozenset(spec.task for spec in PERIODIC_TASKS)


def _periodic_task_of(record: logging.LogRecord) -> str | None:
    if record.name in _TASK_LINE_LOGGERS and isinstance(record.args, dict):
        message = str(record.msg)
        if message.endswith(" received") or " succeeded in " in message:
            return record.args.get("name")
    elif record.name == _BEAT_LOGGER and record.msg == _BEAT_SENDING and isinstance(record.args, tuple):
        return record.args[1] if len(record.args) == 2 else None
    return None


class PeriodicChatterFilter(logging.Filter):
    """On a handler: a periodic task's "received"/"succeeded"/"sending due task" INFO record becomes a DEBUG one,
    kept only when its logger is enabled for DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        task = _periodic_task_of(record)
        try:
            periodic = task is not None and task in periodic_task_names()
        except Exception:  # noqa: BLE001 - before Django is set up there is no schedule: leave the record alone
            return True
        if not periodic:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(JSON_FIELDS, rename_fields=JSON_RENAMED)


def logging_config(*, level: str, log_format: str) -> dict:
    """settings.LOGGING for LOG_LEVEL and LOG_FORMAT (checked by the settings: plain or json)."""
    formatter = (
        {"()": "pythonjsonlogger.json.JsonFormatter", "fmt": JSON_FIELDS, "rename_fields": JSON_RENAMED}
        if log_format == "json"
        else {"format": PLAIN_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {"periodic_chatter": {"()": "emailsys.logs.PeriodicChatterFilter"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "default", "filters": ["periodic_chatter"]}
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            "axes": {"level": "WARNING"},  # failures and lockouts; not its start banner or every successful login
        },
    }


def celery_logging_adjust(logger: logging.Logger, **_kwargs) -> None:
    """Celery's after_setup_logger / after_setup_task_logger: its handlers get the chatter filter, and with
    LOG_FORMAT=json the JSON formatter."""
    from django.conf import settings

    as_json = getattr(settings, "LOG_FORMAT", "plain") == "json"
    for handler in logger.handlers:
        if not any(isinstance(existing, PeriodicChatterFilter) for existing in handler.filters):
            handler.addFilter(PeriodicChatterFilter())
        if as_json:
            handler.setFormatter(json_formatter())


def worker_banner_replace(worker) -> None:
    """Celery's celeryd_after_setup, before the banner: with LOG_FORMAT=json the banner becomes one log record."""
    from django.conf import settings

    if getattr(settings, "LOG_FORMAT", "plain") == "json" and not worker.quiet:
        worker.quiet = True
        queues = sorted(worker.app.amqp.queues.consume_from or ())
        logging.getLogger("celery.apps.worker").info("worker %s starting, queues %s", worker.hostname, queues)


def worker_logging_early() -> None:
    """Celery's celeryd_init: a worker's start warnings (superuser privileges, …) are written before Celery's own
    logging setup; with LOG_FORMAT=json, LOGGING applies from here on and warnings become records, so even those
    lines are JSON."""
    import logging.config

    from django.conf import settings

    if getattr(settings, "LOG_FORMAT", "plain") == "json":
        logging.config.dictConfig(settings.LOGGING)
        logging.captureWarnings(True)
