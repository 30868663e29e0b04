"""Beat's scheduler: django-celery-beat's DatabaseScheduler that ticks only while it holds the beat lock
(emailsys.beat_lock), and records each tick for /healthz.

Any number of beats may run (one per host, or a restarted pod next to the old one): the one holding the lock ticks;
the others stand by, sending nothing, and ask for the lock every BEAT_LOCK_RETRY_SECONDS. When the holder dies its
session ends, PostgreSQL releases the lock and a standby takes it on its next try. The new holder re-reads the
schedule from the database, so it continues from the runs the old one saved: each run is saved right after it was
sent (django-celery-beat saves every 3 minutes by default), so a takeover repeats a run only when the holder died
between sending it and saving it (our periodic tasks are idempotent).
"""

import logging
import time

from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler

from emailsys.beat_lock import BeatLock
from emailsys.health import beat_record_tick

logger = logging.getLogger(__name__)


class HeartbeatScheduler(DatabaseScheduler):
    def __init__(self, *args, **kwargs) -> None:
        kwargs["sync_every_tasks"] = 1  # save each run's last_run_at at once, for the beat that takes over
        self.beat_lock = BeatLock()
        self._holder_seen: str | None = ""  # the holder last logged; "" before the first try
        super().__init__(*args, **kwargs)

    def tick(self, *args, **kwargs) -> float:
        if not self._lock_held():
            return settings.BEAT_LOCK_RETRY_SECONDS
        interval = super().tick(*args, **kwargs)
        beat_record_tick(at=time.time())
        return interval

    def _lock_held(self) -> bool:
        if self.beat_lock.held:
            if self.beat_lock.still_held():
                return True
            self._holder_seen = ""
            return False
        acquired, holder = self.beat_lock.try_acquire()
        if acquired:
            logger.warning("beat lock: acquired by %s; this beat is now the active one", self.beat_lock.name)
            self._schedule_reread()
            return True
        described = _describe(holder)
        if described != self._holder_seen:
            logger.warning(
                "beat lock: held by %s; %s stands by (asking again every %ss)",
                described,
                self.beat_lock.name,
                settings.BEAT_LOCK_RETRY_SECONDS,
            )
            self._holder_seen = described
        return False

    def _schedule_reread(self) -> None:
        """Forget the schedule held in memory (read at start, or before this beat lost the lock): the next tick
        reads every periodic task, with the last runs the previous holder saved, and rebuilds the heap."""
        self._initial_read = True
        self._heap = None
        self._dirty.clear()

    def close(self) -> None:
        """On a graceful stop (SIGTERM): save the runs, then release the lock so a standby takes over at once."""
        try:
            super().close()  # a standby has no runs to save
        finally:
            if self.beat_lock.held:
                logger.warning("beat lock: released by %s (stopping)", self.beat_lock.name)
            self.beat_lock.release()


def _describe(holder: dict | None) -> str:
    if holder is None:
        return "another session (not visible) or nobody reachable"
    return f"{holder['name']} ({holder['client_addr'] or 'local socket'}, since {holder['since']})"
