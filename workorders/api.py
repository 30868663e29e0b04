"""Work-orders JSON API (staff with the model permissions, `emailsys.permissions`): list, create, retrieve with
steps; start, stop, restart, unlock.

Views validate input, then call services (`workorders.services.lifecycle`) and selectors (`workorders.selectors`).
Bad input, an unknown step or an operation the current state refuses is a 400 with the reason, never a 500.
"""

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from emailsys.api import ModelCleanMixin
from emailsys.apijson import StorableJSONMixin
from emailsys.permissions import requires
from workorders.models import WorkOrder, WorkOrderStep
from workorders.selectors import workorder_list
from workorders.services import lifecycle


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
            "burst_size", "burst_pause_seconds", "created_by", "status", "stop_requested", "resume_at",
            "lock_owner", "lock_acquired_at", "lock_expires_at", "created_at", "steps",
        )  # fmt: skip
        read_only_fields = ("created_by", "status", "stop_requested", "resume_at", "lock_owner", "lock_acquired_at",
                            "lock_expires_at", "created_at")  # fmt: skip

    def create(self, validated_data: dict) -> WorkOrder:
        return lifecycle.workorder_create(**validated_data)  # a refusal is a 400 by field (api_exception_handler)


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

    @extend_schema(request=None, responses={200: WorkOrderSerializer})
    @action(detail=True, methods=["post"], permission_classes=[requires("workorders.unlock_workorder")])
    def unlock(self, request: Request, pk: str | None = None) -> Response:
        lifecycle.workorder_unlock(work_order_id=self.get_object().id)
        return self._fresh(pk)
