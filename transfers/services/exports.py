"""CSV exports: leads with their recipients and statuses, send records, activities, mailing sends.

Each export is a `values_list` over the rows asked for, read with `.iterator(chunk_size=EXPORT_CHUNK_ROWS)` —
on PostgreSQL a server-side cursor — and written out as CSV text in chunks, so memory stays flat whatever the
row count (bench/exports.py measures it). Under ASGI (daphne) the response must be an async iterator, or Django
reads a sync one into a list first; `export_chunks_async` pulls the same sync chunks through `sync_to_async` on
the request's thread, where the cursor lives.
"""

import csv
import json
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.db.models import Model, QuerySet

from campaigns.models import Activity, Lead, Recipient, SendRecord
from workorders.models import MailingSend

EXPORT_CHUNK_ROWS = 2000


@dataclass(frozen=True)
class ExportSpec:
    name: str
    model: type[Model]  # the rows the caller filters (a changelist's queryset, an API filter)
    permissions: tuple[str, ...]
    header: tuple[str, ...]
    rows: Callable[[QuerySet], Iterable[tuple]]  # the model's filtered queryset → CSV rows

    @property
    def file_name(self) -> str:
        return f"{self.name}.csv"


def _lead_rows(leads: QuerySet) -> Iterator[tuple]:
    recipients = (
        Recipient.objects.filter(lead__in=leads.values("pk"))
        .order_by("lead_id", "position")
        .values_list(
            "lead_id", "lead__external_id", "lead__campaign_id", "lead__campaign__name", "lead__state",
            "lead__current_step", "lead__next_due_at", "position", "email", "name", "first_name", "last_name",
            "company_name", "website", "provider", "status", "last_contacted_at", "last_step", "lead__custom_fields",
        )
    )  # fmt: skip
    for row in recipients.iterator(chunk_size=EXPORT_CHUNK_ROWS):
        yield (*row[:-1], json.dumps(row[-1], ensure_ascii=False, sort_keys=True) if row[-1] else "")


def _send_record_rows(records: QuerySet) -> Iterator[tuple]:
    rows = (
        SendRecord.objects.filter(pk__in=records.values("pk"))
        .order_by("pk")
        .values_list("pk", "campaign_id", "campaign__name", "lead_id", "lead__external_id", "recipient__email",
                     "step__order", "account__email", "state", "attempts", "subject", "message_id", "created_at",
                     "sent_at", "last_error")
    )  # fmt: skip
    return rows.iterator(chunk_size=EXPORT_CHUNK_ROWS)


def _activity_rows(activities: QuerySet) -> Iterator[tuple]:
    rows = (
        Activity.objects.filter(pk__in=activities.values("pk"))
        .order_by("created_at", "pk")
        .values_list("pk", "created_at", "kind", "campaign_id", "lead_id", "recipient__email", "account__email",
                     "step_order", "message", "detail")
    )  # fmt: skip
    for row in rows.iterator(chunk_size=EXPORT_CHUNK_ROWS):
        yield (*row[:-1], json.dumps(row[-1], ensure_ascii=False, sort_keys=True) if row[-1] else "")


def _mailing_send_rows(sends: QuerySet) -> Iterator[tuple]:
    rows = (
        MailingSend.objects.filter(pk__in=sends.values("pk"))
        .order_by("pk")
        .values_list("pk", "work_order_id", "email", "event_code", "sub_event", "stage", "language", "is_test",
                     "account__email", "state", "attempts", "subject", "message_id", "created_at", "sent_at",
                     "last_error")
    )  # fmt: skip
    return rows.iterator(chunk_size=EXPORT_CHUNK_ROWS)


EXPORTS: dict[str, ExportSpec] = {
    spec.name: spec
    for spec in (
        ExportSpec("leads", Lead, ("campaigns.view_lead", "campaigns.view_recipient"),
                   ("lead", "lead_id", "campaign", "campaign_name", "lead_state", "current_step", "next_due_at",
                    "position", "email", "name", "first_name", "last_name", "company_name", "website", "provider",
                    "recipient_status", "last_contacted_at", "last_step", "custom_fields"), _lead_rows),
        ExportSpec("send-records", SendRecord, ("campaigns.view_sendrecord",),
                   ("id", "campaign", "campaign_name", "lead", "lead_id", "email", "step", "account", "state",
                    "attempts", "subject", "message_id", "created_at", "sent_at", "last_error"), _send_record_rows),
        ExportSpec("activities", Activity, ("campaigns.view_activity",),
                   ("id", "created_at", "kind", "campaign", "lead", "email", "account", "step", "message", "detail"),
                   _activity_rows),
        ExportSpec("mailing-sends", MailingSend, ("workorders.view_mailingsend",),
                   ("id", "work_order", "email", "event_code", "sub_event", "stage", "language", "is_test",
                    "account", "state", "attempts", "subject", "message_id", "created_at", "sent_at", "last_error"),
                   _mailing_send_rows),
    )
}  # fmt: skip
EXPORT_BY_MODEL = {spec.model: spec for spec in EXPORTS.values()}


class _Buffer:
    """csv.writer's file: keeps what was written until it is taken."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, value: str) -> None:
        self.parts.append(value)

    def take(self) -> str:
        text = "".join(self.parts)
        self.parts.clear()
        return text


def export_chunks(*, spec: ExportSpec, queryset: QuerySet) -> Iterator[str]:
    """The CSV text, header first, in chunks of EXPORT_CHUNK_ROWS rows (a UTF-8 BOM first, so Excel reads
    accents right). Datetimes as ISO 8601 in UTC; None as an empty cell."""
    buffer = _Buffer()
    writer = csv.writer(buffer)
    writer.writerow(spec.header)
    yield "\ufeff" + buffer.take()
    count = 0
    for row in spec.rows(queryset):
        writer.writerow(["" if value is None else value.isoformat() if hasattr(value, "isoformat") else value
                         for value in row])  # fmt: skip
        count += 1
        if count % EXPORT_CHUNK_ROWS == 0:
            yield buffer.take()
    rest = buffer.take()
    if rest:
        yield rest


async def export_chunks_async(chunks: Iterator[str]) -> AsyncIterator[str]:
    """The same chunks for an ASGI response: each `next` runs on the request's sync thread (thread-sensitive),
    where the server-side cursor and its connection stay."""
    done = object()
    step = sync_to_async(next, thread_sensitive=True)
    while True:
        chunk = await step(chunks, done)
        if chunk is done:
            return
        yield chunk
