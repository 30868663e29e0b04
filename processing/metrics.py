"""Inbound metrics on /metrics, shared by every process through Redis (as emailsys/metrics.py does): counters in
one hash, the classification time histogram in another; the sync lag is read from PostgreSQL at scrape time.
None of these raises."""

import logging
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from emailsys.metrics import histogram_add, histogram_observe_many
from emailsys.ops_clients import ops_redis

logger = logging.getLogger(__name__)

COUNTS_KEY = "emailsys:metrics:inbound"
SECONDS_KEY = "emailsys:metrics:inbound:seconds"
EMAIL_EVENTS = ("received", "failed", "duplicate", "poison_skipped", "resync")
WEBHOOK_OUTCOMES = ("accepted", "duplicate", "unsigned", "bad_signature", "stale_timestamp", "too_large", "malformed",
                    "unknown_mailbox")  # fmt: skip
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SEP = "\x1f"


def inbound_count(event: str, *, label: str = "", amount: int = 1) -> None:
    """Counts an inbound event: "received", "classified" (label: the class), "failed", "duplicate",
    "poison_skipped", "resync", "webhook" (label: the outcome: accepted, duplicate, unsigned, bad_signature,
    stale_timestamp, too_large, malformed, unknown_mailbox)."""
    try:
        ops_redis().hincrby(COUNTS_KEY, f"{event}{_SEP}{label}", amount)
    except Exception as error:  # noqa: BLE001 - a metrics outage must not fail the work it counts
        logger.warning("could not count inbound %s: %s", event, type(error).__name__)


def classification_observe(*, seconds: float, classification: str) -> None:
    """One classification's processing time (the histogram)."""
    classifications_record([(classification, seconds)], counted=False)


def classifications_record(results: list[tuple[str, float]], *, counted: bool = True) -> None:
    """A batch's classifications, in one Redis round trip: counted ("classified", label: the class) and their
    processing times in the histogram."""
    try:
        pipe = ops_redis().pipeline(transaction=False)
        if counted:
            for classification, amount in Counter(classification for classification, _ in results).items():
                pipe.hincrby(COUNTS_KEY, f"classified{_SEP}{classification}", amount)
        histogram_observe_many(pipe, SECONDS_KEY, results, SECONDS_BUCKETS)
        pipe.execute()
    except Exception as error:  # noqa: BLE001 - a metrics outage must not fail the work it counts
        logger.warning("could not record classifications: %s", type(error).__name__)


class InboundCollector(Collector):
    def describe(self) -> list:
        """Names only: registering must not touch Redis or the database."""
        return [
            CounterMetricFamily("emailsys_inbound_emails", "", labels=["event"]),
            CounterMetricFamily("emailsys_inbound_classified", "", labels=["classification"]),
            CounterMetricFamily("emailsys_inbound_webhooks", "", labels=["outcome"]),
            GaugeMetricFamily("emailsys_inbound_sync_lag", "", labels=["mailbox"]),
            HistogramMetricFamily("emailsys_inbound_classification_seconds", "", labels=["classification"]),
        ]

    def collect(self) -> Iterator:
        emails = CounterMetricFamily("emailsys_inbound_emails", "Inbound mail events.", labels=["event"])
        classified = CounterMetricFamily(
            "emailsys_inbound_classified", "Messages classified, per class.", labels=["classification"]
        )
        webhooks = CounterMetricFamily("emailsys_inbound_webhooks", "Webhook requests by outcome.", labels=["outcome"])
        seconds = HistogramMetricFamily(
            "emailsys_inbound_classification_seconds", "Classification time, per class.", labels=["classification"]
        )
        try:
            redis = ops_redis()
            counts = {key.decode(): int(value) for key, value in redis.hgetall(COUNTS_KEY).items()}
            histogram = {key.decode(): value.decode() for key, value in redis.hgetall(SECONDS_KEY).items()}
        except Exception as error:  # noqa: BLE001
            logger.warning("could not read inbound metrics: %s", type(error).__name__)
            counts, histogram = {}, {}
        events: dict[str, float] = dict.fromkeys(EMAIL_EVENTS, 0.0)
        outcomes: dict[str, float] = dict.fromkeys(WEBHOOK_OUTCOMES, 0.0)
        classes: dict[str, float] = {}
        for key, value in counts.items():
            event, _, label = key.partition(_SEP)
            if event == "classified":
                classes[label] = classes.get(label, 0.0) + value
            elif event == "webhook":
                outcomes[label] = outcomes.get(label, 0.0) + value
            else:
                events[event] = events.get(event, 0.0) + value
        for name, value in sorted(events.items()):
            emails.add_metric([name], value)
        for name, value in sorted(classes.items()):
            classified.add_metric([name], value)
        for name, value in sorted(outcomes.items()):
            webhooks.add_metric([name], value)
        histogram_add(seconds, histogram, SECONDS_BUCKETS)
        yield emails
        yield classified
        yield webhooks
        yield seconds
        yield self._sync_lag()

    def _sync_lag(self) -> GaugeMetricFamily:
        lag = GaugeMetricFamily(
            "emailsys_inbound_sync_lag", "History entries the provider has beyond the cursor.", labels=["mailbox"]
        )
        from processing.models import Mailbox

        try:
            rows = Mailbox.objects.filter(enabled=True).values_list("address", "provider_history_id", "last_history_id")
            for address, provider_id, cursor in rows:
                lag.add_metric([address], float(max(provider_id - (cursor or 0), 0)))
        except Exception as error:  # noqa: BLE001
            logger.warning("could not read the sync lag: %s", type(error).__name__)
        return lag


_collector: InboundCollector | None = None


def register_collector() -> None:
    """From ProcessingConfig.ready(): once per process."""
    global _collector
    if _collector is None:
        _collector = InboundCollector()
        REGISTRY.register(_collector)
