"""Imports and exports over the API (/api/v1/): the admin's pages as endpoints, with the same services.

- `POST /imports/` (multipart: kind, campaign for leads, file, start=true) → 201 with the job (its id); a bad
  file is a 400 with the reason and nothing is stored. `GET /imports/<id>/` polls status, progress and counts;
  `GET /imports/<id>/preview/` shows the first rows and the column mapping; `POST /imports/<id>/start/` starts an
  upload made with start=false; `GET /imports/<id>/report/` lists the skipped rows, `/report-csv/` as CSV.
- `GET /exports/<leads|send-records|activities|mailing-sends>/?<filters>` streams CSV (the lists' filters).

Uploading and starting need `transfers.add_importjob` plus the permissions of what the kind writes
(`import_job_permissions`); reading jobs `transfers.view_importjob`; an export the view permissions of its rows.
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.filters import ActivityFilter, LeadFilter, SendRecordFilter
from campaigns.models import Campaign
from emailsys.apijson import JSONParser
from emailsys.permissions import IsActiveStaff, requires
from transfers.models import ImportJob
from transfers.services.exports import EXPORTS
from transfers.services.imports import (
    import_job_create,
    import_job_permissions,
    import_job_preview,
    import_job_start,
)
from transfers.views import export_response, import_report_response
from workorders.filters import MailingSendFilter


class ImportJobSerializer(serializers.ModelSerializer):
    percent = serializers.IntegerField(read_only=True)

    class Meta:
        model = ImportJob
        fields = ["id", "kind", "status", "campaign", "file_name", "file_size", "created_by", "created_at",
                  "started_at", "finished_at", "percent", "created", "updated", "unchanged", "skipped",
                  "leads_created", "leads_updated", "error", "result_campaign"]  # fmt: skip
        read_only_fields = fields


class ImportUploadSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=ImportJob.Kind.choices)
    campaign = serializers.PrimaryKeyRelatedField(queryset=Campaign.objects.all(), required=False, allow_null=True)
    file = serializers.FileField(allow_empty_file=True)
    start = serializers.BooleanField(default=True, help_text="false: upload only (see /preview/), start later.")


class ImportReportSerializer(serializers.Serializer):
    job = ImportJobSerializer()
    skipped_rows = serializers.ListField(child=serializers.ListField(), help_text="[line, reason], header = line 1")


class ImportPreviewSerializer(serializers.Serializer):
    columns = serializers.ListField(child=serializers.ListField(), help_text="[column, what it becomes]")
    rows = serializers.ListField(child=serializers.ListField())
    row_errors = serializers.ListField(child=serializers.ListField())
    outline = serializers.DictField(help_text="A campaign file's name, steps and accounts.")
    error = serializers.CharField()


class _AnyAccept(DefaultContentNegotiation):
    """CSV endpoints answer whatever the Accept header (their responses bypass the renderers)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class ImportJobViewSet(mixins.CreateModelMixin, mixins.RetrieveModelMixin, mixins.ListModelMixin,
                       viewsets.GenericViewSet):  # fmt: skip
    queryset = ImportJob.objects.select_related("campaign").order_by("-created_at", "-id")
    serializer_class = ImportJobSerializer
    parser_classes = [MultiPartParser, FormParser, JSONParser]  # JSON: to be told a file is missing

    @extend_schema(request={"multipart/form-data": ImportUploadSerializer},
                   responses={201: ImportJobSerializer, 400: OpenApiResponse(), 403: OpenApiResponse()})  # fmt: skip
    def create(self, request: Request, *args, **kwargs) -> Response:
        """Uploads a file and (unless start=false) starts importing it on a worker; poll the job for progress."""
        body = ImportUploadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        kind = body.validated_data["kind"]
        if not request.user.has_perms(import_job_permissions(kind=kind)):
            raise PermissionDenied("You may not run this kind of import.")
        upload = body.validated_data["file"]
        try:
            job = import_job_create(kind=kind, file=upload.file, file_name=upload.name, file_size=upload.size,
                                    campaign=body.validated_data.get("campaign"), user=request.user,
                                    source="api")  # fmt: skip
            if body.validated_data["start"]:
                job = import_job_start(job_id=job.pk)
        except DjangoValidationError as error:
            raise ValidationError({"file": error.messages}) from None
        return Response(ImportJobSerializer(job).data, status=201)

    @extend_schema(request=None, responses={200: ImportJobSerializer, 409: OpenApiResponse()})
    @action(detail=True, methods=["post"], permission_classes=[requires("transfers.add_importjob")])
    def start(self, request: Request, pk: str | None = None) -> Response:
        job = self.get_object()
        if not request.user.has_perms(import_job_permissions(kind=job.kind)):
            raise PermissionDenied("You may not run this kind of import.")
        try:
            job = import_job_start(job_id=job.pk)
        except DjangoValidationError as error:
            return Response({"detail": " ".join(error.messages)}, status=409)
        return Response(ImportJobSerializer(job).data)

    @extend_schema(responses={200: ImportPreviewSerializer})
    @action(detail=True, methods=["get"], permission_classes=[requires()])
    def preview(self, request: Request, pk: str | None = None) -> Response:
        preview = import_job_preview(job=self.get_object())
        return Response(ImportPreviewSerializer(preview).data)

    @extend_schema(responses={200: ImportReportSerializer})
    @action(detail=True, methods=["get"], permission_classes=[requires()])
    def report(self, request: Request, pk: str | None = None) -> Response:
        job = self.get_object()
        return Response({"job": ImportJobSerializer(job).data, "skipped_rows": job.skipped_rows})

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    @action(detail=True, methods=["get"], url_path="report-csv", permission_classes=[requires()],
            content_negotiation_class=_AnyAccept)  # fmt: skip
    def report_csv(self, request: Request, pk: str | None = None) -> HttpResponse:
        return import_report_response(job=self.get_object())


EXPORT_FILTERS = {"leads": LeadFilter, "send-records": SendRecordFilter, "activities": ActivityFilter,
                  "mailing-sends": MailingSendFilter}  # fmt: skip


class ExportView(APIView):
    """Streams the rows as CSV: leads (one row per recipient, with statuses), send records, activities or
    mailing sends, filtered like their lists (leads: campaign, state; send records: state, campaign, account;
    activities: campaign, account, kind; mailing sends: work_order, state)."""

    permission_classes = [IsActiveStaff]  # and the export's own view permissions, checked below
    content_negotiation_class = _AnyAccept

    @extend_schema(
        parameters=[OpenApiParameter(name, str, description="a filter of the list") for name in
                    ("campaign", "state", "account", "kind", "work_order")],
        responses={(200, "text/csv"): OpenApiTypes.STR, 400: OpenApiResponse(), 403: OpenApiResponse()},
    )  # fmt: skip
    def get(self, request: Request, name: str) -> HttpResponse:
        spec = EXPORTS.get(name)
        if spec is None:
            raise NotFound(f"No export {name!r}; there are: {', '.join(EXPORTS)}.")
        if not request.user.has_perms(spec.permissions):
            raise PermissionDenied(f"Exporting {name} needs {', '.join(spec.permissions)}.")
        filterset = EXPORT_FILTERS[name](request.query_params, queryset=spec.model.objects.all())
        if not filterset.is_valid():
            raise ValidationError(filterset.errors)
        return export_response(request=request, spec=spec, queryset=filterset.qs)
