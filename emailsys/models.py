"""Event bus rows: the transactional outbox (written by the emitter's transaction) and the events received from it
(by the SQS bridge or, without SQS, straight after commit). See emailsys/eventbus.py for the state machine."""

from django.db import models
from django.db.models import Q
from django.utils import timezone


class OutboxEvent(models.Model):
    """An event written in the same transaction as the state change it announces; `id` is the outbox id, the SQS
    MessageDeduplicationId and the receive side's unique key. `published_at` is set once SQS (or the direct
    path) took it; rows left unpublished by a crash are published again by the sweeper."""

    stream = models.CharField(max_length=64)
    key = models.CharField(max_length=200)
    kind = models.CharField(max_length=64)
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["stream", "key", "id"], name="outbox_stream_key_id"),
            models.Index(fields=["created_at"], condition=Q(published_at__isnull=True), name="outbox_unpublished"),
        ]
        constraints = [
            models.CheckConstraint(condition=~Q(stream="") & ~Q(key="") & ~Q(kind=""), name="outbox_names_set"),
        ]

    def __str__(self) -> str:
        return f"outbox {self.id} {self.stream}:{self.key} {self.kind}"


class ReceivedEvent(models.Model):
    """An outbox event as received, moving received → dispatched → started → done | failed.

    Unique on `outbox_id`, so a redelivered message is recognised. At most one event per (stream, key) is
    dispatched or started at any time (a partial unique index), which is what makes a key's events run one at a
    time; eventbus.event_dispatch_next picks which one, in outbox order."""

    class State(models.TextChoices):
        RECEIVED = "received"
        DISPATCHED = "dispatched"
        STARTED = "started"
        DONE = "done"
        FAILED = "failed"

    class Via(models.TextChoices):
        SQS = "sqs"
        DIRECT = "direct"

    outbox_id = models.BigIntegerField(unique=True)
    stream = models.CharField(max_length=64)
    key = models.CharField(max_length=200)
    kind = models.CharField(max_length=64)
    payload = models.JSONField(default=dict, blank=True)
    via = models.CharField(max_length=16, choices=Via.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.RECEIVED)
    received_at = models.DateTimeField(default=timezone.now)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)  # times a worker started it
    last_error = models.TextField(blank=True)

    IN_FLIGHT = (State.DISPATCHED, State.STARTED)
    FINISHED = (State.DONE, State.FAILED)

    class Meta:
        indexes = [
            models.Index(fields=["stream", "key", "outbox_id"], name="received_stream_key_outbox"),
            models.Index(fields=["state", "dispatched_at"], name="received_state_dispatched"),
            models.Index(fields=["finished_at"], name="received_finished"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(state__in=["received", "dispatched", "started", "done", "failed"]),
                name="received_state_valid",
            ),
            models.CheckConstraint(condition=Q(via__in=["sqs", "direct"]), name="received_via_valid"),
            models.UniqueConstraint(
                fields=["stream", "key"],
                condition=Q(state__in=["dispatched", "started"]),
                name="received_one_in_flight_per_key",
            ),
            models.CheckConstraint(
                # failed without a dispatch: a stream no longer configured when its turn came
                condition=Q(state__in=["received", "failed"]) | Q(dispatched_at__isnull=False),
                name="received_dispatched_has_time",
            ),
            models.CheckConstraint(
                condition=Q(state__in=["received", "dispatched", "failed"])
                | Q(started_at__isnull=False, attempts__gte=1),
                name="received_started_has_time",
            ),
            models.CheckConstraint(
                condition=Q(state__in=["done", "failed"], finished_at__isnull=False)
                | Q(state__in=["received", "dispatched", "started"], finished_at__isnull=True),
                name="received_finished_iff_done_or_failed",
            ),
        ]

    def __str__(self) -> str:
        return f"event {self.outbox_id} {self.stream}:{self.key} {self.kind} ({self.state})"
