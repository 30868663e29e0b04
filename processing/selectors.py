"""Reads of inbound mail for the API, the admin, the dashboard and the live stats: querysets and read models."""

from datetime import timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone
from kombu import Connection

from processing.models import EmailResult, InboundEmail

STATS_DAYS = 30
INBOUND_QUEUES = ("inbound", "inbound_backfill")


def email_list() -> QuerySet[InboundEmail]:
    """Newest first, with the result and the mailbox in the same query; the raw MIME is left unread."""
    return (
        InboundEmail.objects.select_related("result", "mailbox")
        .defer("raw", "references", "recipients")
        .order_by("-received_at", "-id")
    )


def email_get(*, email_id: str) -> InboundEmail | None:
    """The message the provider calls `email_id` (the first stored, should two mailboxes share an id)."""
    return InboundEmail.objects.select_related("result", "mailbox").filter(email_id=email_id).order_by("id").first()


def result_get(*, email_id: str) -> EmailResult | None:
    return EmailResult.objects.filter(email__email_id=email_id).order_by("email_id").first()


def _percentiles() -> dict[str, float | None]:
    """Processing time percentiles over every result, by PostgreSQL's percentile_cont (one scan of the column)."""
    table = connection.ops.quote_name(EmailResult._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY processing_time_ms) "  # noqa: S608
            f"FROM {table}"
        )
        row = cursor.fetchone()
    values = row[0] if row and row[0] is not None else [None, None, None]
    return {"p50": values[0], "p95": values[1], "p99": values[2]}


def _per_class(results: QuerySet[EmailResult]) -> dict[str, int]:
    return dict(results.order_by().values("classification").annotate(n=Count("id")).values_list("classification", "n"))


def inbound_counts() -> dict[str, Any]:
    """Totals and counts per class: what the live stats updates carry (a few aggregate queries)."""
    statuses = InboundEmail.objects.aggregate(
        received=Count("id"),
        queued=Count("id", filter=Q(status=InboundEmail.Status.QUEUED)),
        failed=Count("id", filter=Q(status=InboundEmail.Status.FAILED)),
    )
    per_class = _per_class(EmailResult.objects.all())
    by_class = {choice: per_class.get(choice, 0) for choice in EmailResult.Classification.values}
    totals = {**statuses, "classified": sum(by_class.values())}
    return {"totals": totals, "by_class": by_class}


def inbound_queue_depths(conn: Connection | None = None) -> dict[str, int | None]:
    """Messages waiting in the inbound pool's two queues; None for each when the broker cannot be read. `conn`: a
    broker connection the caller keeps (emailsys.metrics.queue_depths)."""
    from emailsys.metrics import queue_depths

    try:
        depths = queue_depths(conn, queues=INBOUND_QUEUES)
    except Exception:  # noqa: BLE001 - stats stay readable while the broker is down
        return dict.fromkeys(INBOUND_QUEUES)
    return {queue: depths.get(queue, 0) for queue in INBOUND_QUEUES}


def inbound_stats(*, days: int = STATS_DAYS) -> dict[str, Any]:
    """GET /stats: totals, counts per class and per day (the last `days` days, by received date, UTC), the
    inbound queues' depth and the processing time percentiles."""
    today = timezone.now().date()
    since = today - timedelta(days=days - 1)
    rows = (
        InboundEmail.objects.filter(received_at__date__gte=since)
        .annotate(day=TruncDate("received_at"))
        .values("day")
        .annotate(
            received=Count("id"),
            classified=Count("id", filter=Q(result__isnull=False)),
            failed=Count("id", filter=Q(status=InboundEmail.Status.FAILED)),
        )
    )
    found = {row["day"]: row for row in rows}
    per_day = []
    for offset in range(days):
        day = since + timedelta(days=offset)
        row = found.get(day, {})
        per_day.append({
            "date": day.isoformat(),
            "received": row.get("received", 0),
            "classified": row.get("classified", 0),
            "failed": row.get("failed", 0),
        })  # fmt: skip
    return {
        **inbound_counts(),
        "per_day": per_day,
        "queue_depth": inbound_queue_depths(),
        "processing_time_ms": _percentiles(),
    }


def inbound_today(*, latest: int = 10) -> dict[str, Any]:
    """The dashboard's inbound panel: today's (UTC) counts per class and the latest classified messages."""
    start = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    today = EmailResult.objects.filter(processed_at__gte=start)
    per_class = _per_class(today)
    received = InboundEmail.objects.filter(created_at__gte=start).count()
    queued = InboundEmail.objects.filter(status=InboundEmail.Status.QUEUED).count()
    recent = EmailResult.objects.select_related("email").order_by("-processed_at", "-id")[:latest]
    return {
        "received_today": received,
        "unprocessed": queued,
        "classified_today": {choice: per_class.get(choice, 0) for choice in EmailResult.Classification.values},
        "latest": [
            {
                "email_id": result.email.email_id,
                "subject": result.email.subject,
                "sender": result.email.sender,
                "classification": result.classification,
                "confidence": round(result.confidence, 3),
                "processed_at": result.processed_at.isoformat(),
            }
            for result in recent
        ],
    }
