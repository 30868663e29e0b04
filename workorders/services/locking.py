"""The work-order lease: only its holder processes a work order.

Taken with one conditional UPDATE (free or expired), renewed by `LeaseKeeper`'s heartbeat thread while steps run
(through SMTP exchanges and burst pauses alike), released at the end. A holder that fails to renew has lost the
lease to another worker and stops before its next email; the send records decide what was sent, so the new
holder resumes without sending anything twice. The same thread polls `stop_requested`, so a stop is seen
within `POLL_SECONDS` wherever the step is.
"""

import os
import socket
import threading
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Q

from emailsys import clock
from workorders.models import WorkOrder

POLL_SECONDS = 0.2


def lease_seconds() -> float:
    return float(settings.WORKORDER_LEASE_SECONDS)


def lock_owner_new() -> str:
    """Unique per processing run: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def workorder_lock_acquire(*, work_order_id: int, owner: str) -> bool:
    """Takes the lease if it is free or expired; True if this caller now holds it."""
    now = clock.now()
    return bool(
        WorkOrder.objects.filter(Q(lock_owner="") | Q(lock_expires_at__lt=now), id=work_order_id).update(
            lock_owner=owner, lock_acquired_at=now, lock_expires_at=now + timedelta(seconds=lease_seconds())
        )
    )


def workorder_lock_renew(*, work_order_id: int, owner: str) -> bool:
    """False: the lease was taken over or cleared (unlock); the caller must stop."""
    expires = clock.now() + timedelta(seconds=lease_seconds())
    return bool(WorkOrder.objects.filter(id=work_order_id, lock_owner=owner).update(lock_expires_at=expires))


def workorder_lock_release(*, work_order_id: int, owner: str) -> bool:
    return bool(
        WorkOrder.objects.filter(id=work_order_id, lock_owner=owner).update(
            lock_owner="", lock_acquired_at=None, lock_expires_at=None
        )
    )


def workorder_lock_is_live(work_order: WorkOrder) -> bool:
    return bool(work_order.lock_owner and work_order.lock_expires_at and work_order.lock_expires_at > clock.now())


class LeaseKeeper:
    """Context manager: a thread that renews the lease every third of its length and polls `stop_requested`.

    `halted` is set on a stop request (`stopped`) or when the lease is lost (`lost`); `wait(seconds)` sleeps
    until then or until halted, so a burst pause ends within `POLL_SECONDS` of a stop."""

    def __init__(self, *, work_order_id: int, owner: str) -> None:
        self.work_order_id, self.owner = work_order_id, owner
        self.halted = threading.Event()
        self.stopped = False
        self.lost = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{work_order_id}", daemon=True)

    def __enter__(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(timeout=10)

    def wait(self, seconds: float) -> bool:
        """Sleeps up to `seconds`; True if halted meanwhile (or already)."""
        return self.halted.wait(max(0.0, seconds))

    def _run(self) -> None:
        renew_every = lease_seconds() / 3
        last_renewal = time.monotonic()
        try:
            while not self._done.wait(POLL_SECONDS):
                row = (
                    WorkOrder.objects.filter(id=self.work_order_id).values_list("stop_requested", "lock_owner").first()
                )
                if row is None or row[1] != self.owner:
                    self.lost = True
                elif row[0]:
                    self.stopped = True
                if not self.lost and time.monotonic() - last_renewal >= renew_every:
                    self.lost = not workorder_lock_renew(work_order_id=self.work_order_id, owner=self.owner)
                    last_renewal = time.monotonic()
                if self.lost or self.stopped:
                    self.halted.set()
                if self.lost:
                    return
        finally:
            connection.close()
