"""Beat's scheduler: django-celery-beat's DatabaseScheduler that also records each tick for /healthz."""

import logging
import time

from django_celery_beat.schedulers import DatabaseScheduler

from emailsys.health import beat_record_tick

logger = logging.getLogger(__name__)


class HeartbeatScheduler(DatabaseScheduler):
    def tick(self, *args, **kwargs) -> float:
        interval = super().tick(*args, **kwargs)
        beat_record_tick(at=time.time())
        return interval
