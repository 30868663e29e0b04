"""The Celery application: configured from Django settings (CELERY_*), tasks autodiscovered per app.

Workers: one pool per queue, e.g. `celery -A emailsys worker -Q sending -n sending@%h --pool threads`.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailsys.settings.local")

app = Celery("emailsys")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Per-task counts, failures and latency for /metrics, recorded by the worker processes.
import emailsys.metrics  # noqa: E402,F401
