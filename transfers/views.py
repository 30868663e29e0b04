"""The CSV responses the admin and the API share: an export, streamed; an import job's report."""

from django.core.handlers.asgi import ASGIRequest
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils import timezone

from transfers.models import ImportJob
from transfers.services.exports import ExportSpec, export_chunks, export_chunks_async
from transfers.services.imports import REPORT_HEADER, csv_line, import_report_rows


def _attachment(response: HttpResponse, name: str) -> HttpResponse:
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "no-store"
    return response


def export_response(*, request: HttpRequest, spec: ExportSpec, queryset: QuerySet) -> StreamingHttpResponse:
    """Streams the export; under ASGI as an async iterator (Django would read a sync one into memory first)."""
    chunks = export_chunks(spec=spec, queryset=queryset)
    django_request = getattr(request, "_request", request)  # a DRF request wraps Django's
    content = export_chunks_async(chunks) if isinstance(django_request, ASGIRequest) else chunks
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    return _attachment(response, f"{spec.name}-{timezone.now():%Y%m%d-%H%M%S}.csv")


def import_report_response(*, job: ImportJob) -> HttpResponse:
    """Not streamed: the report is on the job's row, in memory already."""
    text = "\ufeff" + "".join(csv_line(row) for row in [REPORT_HEADER, *import_report_rows(job=job)])
    return _attachment(HttpResponse(text, content_type="text/csv; charset=utf-8"), f"import-{job.pk}-report.csv")
