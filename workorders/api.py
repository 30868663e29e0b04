"""Work-orders JSON API (staff with the model permissions, `emailsys.permissions`): list, create, retrieve with
steps; start, stop, restart, approve (the review gate before Send), unlock; the stored artifacts (dry-run list,
prepared emails) listed and served.

Views validate input, then call services (`workorders.services.lifecycle`) and selectors (`workorders.selectors`).
Bad input, an unknown step or an operation the current state refuses is a 400 with the reason (approve outside
*awaiting approval*: a 409), never a 500.
"""

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from emailsys.api import ModelCleanMixin
from emailsys.apijson import StorableJSONMixin
from emailsys.permissions import requires
from workorders.models import WorkOrder, WorkOrderStep
from workorders.selectors import workorder_artifact_content, workorder_artifacts, workorder_list
from workorders.services import lifecycle
from workorders.views import artifact_response


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class WorkOrderStepSerializer(serializers.ModelSerializer):
    class Meta:
        model = WorkOrderStep
        fields = ("name", "order", "status", "message", "done", "total", "result", "started_at", "ended_at")
        read_only_fields = fields


class WorkOrderSerializer(StorableJSONMixin, ModelCleanMixin, serializers.ModelSerializer):
    """Status, stop flag and lock change only through the actions (they are checked and broadcast)."""

    steps = WorkOrderStepSerializer(many=True, read_only=True)
    clean_skip = ("created_by",)

    class Meta:
        model = WorkOrder
        fields = (
            "id", "event", "sub_event", "stage", "audience", "account", "template", "subjects", "from_name",
            "reply_to", "testers", "salutation_by_name", "send_continuously", "send_until", "send_interval_seconds",
            "burst_size", "burst_pause_seconds", "auto_approve", "created_by", "status", "stop_requested",
            "approved_at", "approved_by", "resume_at", "lock_owner", "lock_acquired_at", "lock_expires_at",
            "created_at", "live_version", "steps",
        )  # fmt: skip
        read_only_fields = ("created_by", "status", "stop_requested", "approved_at", "approved_by", "resume_at",
                            "lock_owner", "lock_acquired_at", "lock_expires_at", "created_at",
                            "live_version")  # fmt: skip

    def create(self, validated_data: dict) -> WorkOrder:
        return lifecycle.workorder_create(**validated_data)  # a refusal is a 400 by field (api_exception_handler)


class ArtifactSerializer(serializers.Serializer):
    name = serializers.CharField()
    content_type = serializers.CharField()
    language = serializers.CharField(allow_blank=True)
    url = serializers.CharField(help_text="This API's address of the content.")
    admin_url = serializers.CharField(help_text="The admin's page: inline, or ?download=1 as an attachment.")


class RestartSerializer(serializers.Serializer):
    step = serializers.ChoiceField(choices=WorkOrderStep.Name.choices)


class WorkOrderViewSet(
    mixins.ListModelMixin, mixins.CreateModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = WorkOrderSerializer

    def get_queryset(self) -> QuerySet[WorkOrder]:
        return workorder_list()

    def perform_create(self, serializer: WorkOrderSerializer) -> None:
        serializer.save(created_by=self.request.user)

    def _fresh(self, pk) -> Response:
        return Response(WorkOrderSerializer(self.get_queryset().get(pk=pk)).data)

    @extend_schema(request=None, responses={200: WorkOrderSerializer, 400: OpenApiResponse(description="refused")})
    @action(detail=True, methods=["post"], permission_classes=[requires("workorders.run_workorder")])
    def start(self, request: Request, pk: str | None = None) -> Response:
        lifecycle.workorder_start(work_order_id=self.get_object().id)
        return self._fresh(pk)

    @extend_schema(request=None, responses={200: WorkOrderSerializer})
    @action(detail=True, methods=["post"], permission_classes=[requires("workorders.run_workorder")])
    def stop(self, request: Request, pk: str | None = None) -> Response:
        lifecycle.workorder_stop(work_order_id=self.get_object().id)
        return self._fresh(pk)

    @extend_schema(
        request=RestartSerializer, responses={200: WorkOrderSerializer, 400: OpenApiResponse(description="refused")}
    )
    @action(detail=True, methods=["post"], permission_classes=[requires("workorders.run_workorder")])
    def restart(self, request: Request, pk: str | None = None) -> Response:
        work_order = self.get_object()
        serializer = RestartSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        lifecycle.workorder_restart(work_order_id=work_order.id, step=serializer.validated_data["step"])
        return self._fresh(pk)

    @extend_schema(
        request=None,
        responses={200: WorkOrderSerializer, 409: OpenApiResponse(description="not awaiting approval")},
    )
    @action(detail=True, methods=["post"], permission_classes=[requires("workorders.approve_workorder")])
    def approve(self, request: Request, pk: str | None = None) -> Response:
        """Approves Send of a work order awaiting approval (stopped after Test); `live_version` in the answer is
        what a page waits for."""
        try:
            lifecycle.workorder_approve(work_order_id=self.get_object().id, approved_by=request.user)
        except ValidationError as error:
            raise Conflict(" ".join(error.messages)) from None
        return self._fresh(pk)

    @extend_schema(responses={200: ArtifactSerializer(many=True)})
    @action(detail=True, methods=["get"], permission_classes=[requires()])
    def artifacts(self, request: Request, pk: str | None = None) -> Response:
        """The files the steps stored: Dry-Run's list (CSV), Prepare's email per language (a message)."""
        work_order = self.get_object()
        rows = [
            {
                "name": artifact.name,
                "content_type": artifact.content_type,
                "language": artifact.language,
                "url": reverse("workorder-artifact-content", args=[work_order.id, artifact.name]),
                "admin_url": reverse("workorder-artifact", args=[work_order.id, artifact.name]),
            }
            for artifact in workorder_artifacts(work_order_id=work_order.id)
        ]
        return Response(ArtifactSerializer(rows, many=True).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH, description="e.g. dry-run.csv"),
            OpenApiParameter("download", OpenApiTypes.STR, description="1: as an attachment of its own type"),
        ],
        responses={
            (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description="the file, as text"),
            404: OpenApiResponse(description="no such work order or file"),
        },
    )
    @action(
        detail=True,
        methods=["get"],
        permission_classes=[requires()],
        url_path=r"artifacts/(?P<name>[A-Za-z0-9._-]+)",
        url_name="artifact-content",
    )
    def artifact_content(self, request: Request, pk: str | None = None, name: str = "") -> HttpResponse:
        """One stored file, from whichever storage is configured: as UTF-8 text, or with `?download=1` as an
        attachment (text/csv, message/rfc822)."""
        found = workorder_artifact_content(work_order_id=self.get_object().id, name=name)
        if found is None:
            raise NotFound("This work order has no such file (yet).")
        return artifact_response(found, download=request.query_params.get("download") == "1")

    @extend_schema(request=None, responses={200: WorkOrderSerializer})
    @action(detail=True, methods=["post"], permission_classes=[requires("workorders.unlock_workorder")])
    def unlock(self, request: Request, pk: str | None = None) -> Response:
        lifecycle.workorder_unlock(work_order_id=self.get_object().id)
        return self._fresh(pk)
