"""Work-order metrics for /metrics (next to emailsys.metrics' task metrics, same sharing through Redis):

- `emailsys_workorder_step_duration_seconds{step}`: a histogram of how long steps ran, recorded by the worker when
  a step ends (complete, error, exception or interrupted: ended_at - started_at of that run), in one Redis hash;
- `emailsys_workorders{status}`: work orders by status, counted in PostgreSQL when scraped.
"""

import logging
from collections.abc import Iterator
from datetime import timedelta

from django.db.models import Count
from prometheus_client.core import REGISTRY, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from emailsys.metrics import histogram_add, histogram_observe
from emailsys.ops_clients import ops_redis
from workorders.models import WorkOrder

logger = logging.getLogger(__name__)

STEP_METRICS_KEY = "emailsys:metrics:workorder_steps"
# Steps take from milliseconds (Count) to days (Send-Continuously).
STEP_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 7 * 86400.0)


def step_duration_record(*, step: str, duration: timedelta) -> None:
    """Adds one ended step run to the shared histogram; never raises (a metrics outage must not fail the step)."""
    try:
        pipe = ops_redis().pipeline(transaction=False)
        histogram_observe(pipe, STEP_METRICS_KEY, step, max(0.0, duration.total_seconds()), STEP_BUCKETS)
        pipe.execute()
    except Exception as error:  # noqa: BLE001
        logger.warning("could not record the duration of step %s: %s", step, type(error).__name__)


class WorkOrderCollector(Collector):
    def describe(self) -> list:
        """Names only: without it, registering would call collect() and touch Redis and the database at start."""
        return [
            HistogramMetricFamily("emailsys_workorder_step_duration_seconds", "", labels=["step"]),
            GaugeMetricFamily("emailsys_workorders", "", labels=["status"]),
        ]

    def collect(self) -> Iterator:
        yield self._step_durations()
        yield self._by_status()

    def _step_durations(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            "emailsys_workorder_step_duration_seconds", "How long work-order steps ran, per step.", labels=["step"]
        )
        try:
            fields = {key.decode(): value.decode() for key, value in ops_redis().hgetall(STEP_METRICS_KEY).items()}
        except Exception as error:  # noqa: BLE001
            logger.warning("could not read step metrics: %s", type(error).__name__)
            fields = {}
        histogram_add(family, fields, STEP_BUCKETS)
        return family

    def _by_status(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily("emailsys_workorders", "Work orders by status.", labels=["status"])
        try:
            counts = dict(WorkOrder.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
        except Exception as error:  # noqa: BLE001 - a scrape during a database outage still answers
            logger.warning("could not count work orders: %s", type(error).__name__)
            return family
        for status in WorkOrder.Status.values:
            family.add_metric([status], float(counts.get(status, 0)))
        return family


_collector: WorkOrderCollector | None = None


def register_workorder_collector() -> None:
    global _collector
    if _collector is None:
        _collector = WorkOrderCollector()
        REGISTRY.register(_collector)
