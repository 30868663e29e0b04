"""Operational tasks: a heartbeat that proves beat → broker → worker works, and a worker probe."""

import os
import socket
import time

from celery import shared_task

from emailsys.ops_clients import ops_redis

HEARTBEAT_KEY = "emailsys:heartbeat:last_run"


@shared_task(name="emailsys.heartbeat", ignore_result=True)
def heartbeat() -> None:
    """Scheduled by beat (a periodic task row created by a migration); /healthz shows how long ago it ran."""
    ops_redis().set(HEARTBEAT_KEY, repr(time.time()))


@shared_task(name="emailsys.report_worker", bind=True)
def report_worker(self) -> dict:
    """Says which worker and which queue ran it: publish it to a queue to see which pool serves it."""
    delivery = self.request.delivery_info or {}
    return {
        "hostname": self.request.hostname,
        "queue": delivery.get("routing_key"),
        "exchange": delivery.get("exchange"),
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }
