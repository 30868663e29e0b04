"""Operational tasks: a heartbeat that proves beat → broker → worker works, a worker probe, the dashboard's
refresh, and the event bus's task (runs one event's handler) and sweeper."""

import logging
import os
import socket
import time

from celery import shared_task
from django.conf import settings

from emailsys.dashboard import dashboard_refresh
from emailsys.eventbus import RUN_EVENT_TASK, event_run, event_sweep
from emailsys.health import HEARTBEAT_KEY
from emailsys.ops_clients import ops_redis

logger = logging.getLogger(__name__)


@shared_task(name="emailsys.heartbeat", ignore_result=True)
def heartbeat() -> None:
    """Scheduled by beat (periodic task "emailsys: heartbeat", emailsys/periodic.py); /healthz shows how long ago
    it ran."""
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


@shared_task(
    name=RUN_EVENT_TASK,
    ignore_result=True,
    soft_time_limit=settings.EVENT_HANDLER_TIME_LIMIT,
    time_limit=settings.EVENT_HANDLER_TIME_LIMIT + 60,
)
def run_event(event_id: int) -> None:
    """Runs one received event's handler; sent by the event bus to its stream's queue. A duplicate is a no-op."""
    event_run(event_id=event_id)


@shared_task(name="emailsys.sweep_events", ignore_result=True)
def sweep_events() -> None:
    """Scheduled by beat: publishes what a crash left unpublished and re-sends tasks a broker lost."""
    result = event_sweep()
    if any(vars(result).values()):
        logger.info("event sweep: %s", result)


@shared_task(name="emailsys.dashboard_refresh", ignore_result=True)
def refresh_dashboard() -> None:
    """Scheduled by beat ("emailsys: dashboard refresh", which expires its messages: a backlog left while the
    default pool was down is dropped, not run): probes the slow health parts and publishes the dashboard."""
    dashboard_refresh()
