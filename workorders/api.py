"""Work-orders JSON API (staff with the model permissions, `emailsys.permissions`): list, create, retrieve with
steps; start, stop, restart, approve (the review gate before Send), unlock; the stored artifacts (dry-run list,
prepared emails) listed and served. Contacts, segments and events: CRUD, checked by the models' own rules
(`full_clean`: a segment's rule by `Segment.clean`), a delete that would break what refers to the row a 409.

Views validate input, then call services (`workorders.services.lifecycle`) and selectors (`workorders.selectors`).
Bad input, an unknown step or an operation the current state refuses is a 400 with the reason (approve outside
*awaiting approval*: a 409), never a 500.
"""

from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.db.models import ProtectedError, QuerySet
from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from emailsys.api import ModelCleanMixin
from emailsys.apijson import StorableJSONMixin
from emailsys.permissions import requires
from workorders.filters import ContactFilter, EventFilter, SegmentFilter
from workorders.models import Contact, Event, Segment, WorkOrder, WorkOrderStep
from workorders.selectors import segment_count, workorder_artifact_content, workorder_artifacts, workorder_list
from workorders.services import lifecycle
from workorders.services.segments import segment_referenced_by, segment_save
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


@extend_schema(tags=["work orders"])
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


# --- contacts, segments, events ----------------------------------------------------------------------------


def _protected(instance, error: ProtectedError, what: str) -> Conflict:
    count = len(error.protected_objects)
    return Conflict(f"{instance._meta.verbose_name.capitalize()} {instance.pk} cannot be deleted: {count} {what} "
                    "refer to it.")  # fmt: skip


class ContactSerializer(StorableJSONMixin, ModelCleanMixin, serializers.ModelSerializer):
    """Normalised as the CSV import and the admin do (email and language lower-case), then the model's checks:
    one contact per address, a language code, attributes a JSON object."""

    class Meta:
        model = Contact
        fields = ("id", "email", "name", "language", "subscribed", "attributes", "created_at", "updated_at")
        read_only_fields = ("created_at", "updated_at")
        extra_kwargs = {"attributes": {"help_text": 'Free data segment rules select on, e.g. {"registered": '
                                                    '["VT2025"], "vip": true}.'}}  # fmt: skip

    def validate_attributes(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError('Attributes must be a JSON object ({...}), e.g. {"vip": true}.')
        return value

    def to_internal_value(self, data):
        if isinstance(data, dict):
            data = {**data}
            for name in ("email", "language"):
                if isinstance(data.get(name), str):
                    data[name] = data[name].strip().lower()
        return super().to_internal_value(data)


@extend_schema(tags=["contacts"])
@extend_schema_view(
    create=extend_schema(
        examples=[
            OpenApiExample(
                "A registered contact",
                request_only=True,
                value={
                    "email": "maria@example.com",
                    "name": "Maria",
                    "language": "pt-br",
                    "attributes": {"registered": ["VT2025"], "vip": True},
                },
            )  # fmt: skip
        ],
        responses={201: ContactSerializer, 400: OpenApiResponse(description="bad field, or the address exists")},
    ),
    destroy=extend_schema(responses={204: None, 409: OpenApiResponse(description="mailings were sent to it")}),
)
class ContactViewSet(viewsets.ModelViewSet):
    """The audience of event mailings, by address (`?search=`, `?language=`, `?subscribed=`, `?segment=<id>`: the
    contacts it makes eligible now). A contact mailings were sent to is not deleted (their record is what keeps
    a mailing from reaching it twice): set `subscribed` to false instead."""

    serializer_class = ContactSerializer
    queryset = Contact.objects.order_by("email")
    filterset_class = ContactFilter

    def perform_create(self, serializer: ContactSerializer) -> None:
        try:
            serializer.save()
        except IntegrityError:
            raise Conflict("Another request created a contact with this address meanwhile.") from None

    def perform_update(self, serializer: ContactSerializer) -> None:
        try:
            serializer.save()
        except IntegrityError:
            raise Conflict("Another request gave a contact this address meanwhile.") from None

    def perform_destroy(self, instance: Contact) -> None:
        sent = instance.mailing_sends.count()
        if sent:
            raise Conflict(
                f"Contact {instance.pk} cannot be deleted: {sent} mailing send(s) record what it was sent, and keep "
                "it from getting a mailing twice. Set subscribed to false instead."
            )
        instance.delete()


class SegmentSerializer(StorableJSONMixin, ModelCleanMixin, serializers.ModelSerializer):
    """Validated by `Segment.clean` (through `full_clean`): the rule's shape, the segments it names, cycles, and
    renaming a segment other rules name; every problem at once, each with its place in the rule."""

    class Meta:
        model = Segment
        fields = ("id", "slug", "name", "description", "rule", "created_at", "updated_at")
        read_only_fields = ("created_at", "updated_at")

    def create(self, validated_data: dict) -> Segment:
        return segment_save(segment=Segment(**validated_data))

    def update(self, instance: Segment, validated_data: dict) -> Segment:
        for name, value in validated_data.items():
            setattr(instance, name, value)
        return segment_save(segment=instance)


class SegmentCountSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Contacts eligible now: subscribed and matching the rule.")


@extend_schema(tags=["segments"])
@extend_schema_view(
    create=extend_schema(
        examples=[
            OpenApiExample(
                "Registered for VT2025, in English or French",
                request_only=True,
                value={
                    "slug": "vt2025-en-fr",
                    "name": "VT2025 (en, fr)",
                    "rule": {
                        "and": [
                            {"attribute_contains": {"path": "registered", "value": "VT2025"}},
                            {"language": ["en", "fr"]},
                        ]
                    },
                },
            )  # fmt: skip
        ],
        responses={201: SegmentSerializer, 400: OpenApiResponse(description="the rule's errors, by place")},
    ),
    destroy=extend_schema(
        responses={204: None, 409: OpenApiResponse(description="named by other rules or used by work orders")}
    ),
)
class SegmentViewSet(viewsets.ModelViewSet):
    """Named eligibility rules over contacts (README "Contacts and segments"; `?search=`). A segment another
    rule names or a work order uses is not deleted (409 naming them)."""

    serializer_class = SegmentSerializer
    queryset = Segment.objects.order_by("slug")
    filterset_class = SegmentFilter

    def perform_destroy(self, instance: Segment) -> None:
        users = segment_referenced_by(slug=instance.slug)
        if users:
            raise Conflict(f"Segment {instance.slug!r} cannot be deleted: the rules of {', '.join(users)} name it.")
        try:
            instance.delete()
        except ProtectedError as error:
            raise _protected(instance, error, "work order(s)") from None

    @extend_schema(responses={200: SegmentCountSerializer, 400: OpenApiResponse(description="the rule went bad")})
    @action(detail=True, methods=["get"], permission_classes=[requires("workorders.view_contact")])
    def count(self, request: Request, pk: str | None = None) -> Response:
        """How many contacts the segment makes eligible now (one COUNT query)."""
        return Response(SegmentCountSerializer({"count": segment_count(segment=self.get_object())}).data)


class EventSerializer(ModelCleanMixin, serializers.ModelSerializer):
    """One event per (code, sub_event); a virtual event needs a Zoom id and an in-person one has none."""

    zoom_label = serializers.CharField(read_only=True, help_text="What templates show: the Zoom id or In-Person.")

    class Meta:
        model = Event
        fields = ("id", "code", "sub_event", "name", "attendance", "zoom_id", "zoom_label", "registration_link",
                  "starts_at", "created_at", "updated_at")  # fmt: skip
        read_only_fields = ("created_at", "updated_at")
        validators = []  # (code, sub_event) by the model's full_clean, with Django's message


@extend_schema(tags=["events"])
@extend_schema_view(
    create=extend_schema(
        examples=[
            OpenApiExample(
                "A virtual weekend",
                request_only=True,
                value={
                    "code": "VT2025",
                    "sub_event": "weekend1",
                    "name": "Virtual Training 2025",
                    "attendance": "virtual",
                    "zoom_id": "812 3456 7890",
                    "registration_link": "https://events.example.com/vt2025",
                    "starts_at": "2025-06-07T09:00:00Z",
                },
            )  # fmt: skip
        ],
    ),
    destroy=extend_schema(responses={204: None, 409: OpenApiResponse(description="work orders are about it")}),
)
class EventViewSet(viewsets.ModelViewSet):
    """What event mailings are about, by code and sub-event (`?code=`, `?attendance=`, `?search=`). An event
    work orders are about is not deleted (409)."""

    serializer_class = EventSerializer
    queryset = Event.objects.order_by("code", "sub_event")
    filterset_class = EventFilter

    def perform_create(self, serializer: EventSerializer) -> None:
        try:
            serializer.save()
        except IntegrityError:
            raise Conflict("Another request created this event (code and sub-event) meanwhile.") from None

    def perform_update(self, serializer: EventSerializer) -> None:
        """The code is part of each mailing's key (`mailing_key_sends`): renamed under work orders, the mailings
        already sent would no longer count and the same mailing could reach a contact twice."""
        event = serializer.instance
        code = serializer.validated_data.get("code", event.code)
        if code != event.code and event.work_orders.exists():
            raise Conflict(
                f"Event {event.pk}'s code is part of the key of the mailings its work orders send: it does not change "
                "once work orders are about it. Create a new event instead."
            )
        try:
            serializer.save()
        except IntegrityError:
            raise Conflict("Another request gave an event this code and sub-event meanwhile.") from None

    def perform_destroy(self, instance: Event) -> None:
        try:
            instance.delete()
        except ProtectedError as error:
            raise _protected(instance, error, "work order(s)") from None
