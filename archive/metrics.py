"""The archiver's Prometheus metrics, served by its own /metrics (`archive_emails --health-port`). Archived per
minute: `rate(archive_messages_total{outcome="archived"}[1m]) * 60`.

A registry of their own: the archiver's /metrics shows the archiver, not the project's collectors that read the
database on every scrape (those are the web's /metrics)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

messages = Counter(
    "archive_messages",
    "Queue messages handled, by outcome: archived, already_archived, dead_lettered, failed",
    ["outcome"],
    registry=REGISTRY,
)
errors = Counter(
    "archive_errors", "Errors, by stage: receive, storage, delete, dead_letter, message", ["stage"], registry=REGISTRY
)
storage_writes = Counter(
    "archive_storage_writes", "Storage write attempts, by storage (local, s3) and outcome (created, exists, error)",
    ["storage", "outcome"], registry=REGISTRY,
)  # fmt: skip
queue_messages = Gauge(
    "archive_queue_messages", "Approximate messages in the archive queues (queue: main, dead_letter; state: "
    "visible, in_flight), refreshed by the archiver's loop", ["queue", "state"], registry=REGISTRY,
)  # fmt: skip
latency = Histogram(
    "archive_latency_seconds", "From the message's arrival on the queue (SentTimestamp) to its document stored",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900), registry=REGISTRY,
)  # fmt: skip
