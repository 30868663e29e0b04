"""The audit trail in the API: GET /api/v1/audit/ (list, newest first, with filters) and /api/v1/audit/<id>/.
Read-only; staff users with the view permission of the log entry model (`auditlog.view_logentry`) only."""

import re

import django_filters
from auditlog.models import LogEntry
from django import forms
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, viewsets

from audit.actions import AuditAction
from audit.context import AuditSource
from audit.selectors import audit_entry_list
from emailsys.filters import IsoDateTimeFilter, choice_filter

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,99}")
_KIND_NAMES = {LogEntry.Action.CREATE: "create", LogEntry.Action.UPDATE: "update",
               LogEntry.Action.DELETE: "delete", LogEntry.Action.ACCESS: "access"}  # fmt: skip


class _ObjectTypeField(forms.Field):
    def to_python(self, value: str) -> ContentType | None:
        if value in self.empty_values:
            return None
        app_label, _, model = str(value).lower().partition(".")
        try:
            if not (_NAME.fullmatch(app_label) and _NAME.fullmatch(model)):
                raise ContentType.DoesNotExist
            return ContentType.objects.get_by_natural_key(app_label, model)
        except ContentType.DoesNotExist:
            shown = str(value)[:100]
            raise ValidationError(
                f"{shown!r} is not an object type (app_label.model, e.g. campaigns.campaign).", code="invalid"
            ) from None


@extend_schema_field(OpenApiTypes.STR)
class ObjectTypeFilter(django_filters.Filter):
    field_class = _ObjectTypeField

    def filter(self, queryset: QuerySet, value: ContentType | None) -> QuerySet:
        return queryset if value is None else queryset.filter(content_type=value)


class AuditEntryFilter(django_filters.FilterSet):
    actor = django_filters.CharFilter(
        field_name="additional_data__actor", help_text="username (or, for a command, the OS user)"
    )
    source = choice_filter(AuditSource, field_name="additional_data__source")
    action = choice_filter(AuditAction, field_name="additional_data__action")
    object_type = ObjectTypeFilter(help_text="app_label.model, e.g. campaigns.senderaccount")
    object_id = django_filters.CharFilter(field_name="object_pk")
    since = IsoDateTimeFilter(field_name="timestamp", lookup_expr="gte")
    until = IsoDateTimeFilter(field_name="timestamp", lookup_expr="lt")

    class Meta:
        model = LogEntry
        fields = ["actor", "source", "action", "object_type", "object_id", "since", "until"]


class AuditEntrySerializer(serializers.ModelSerializer):
    action = serializers.SerializerMethodField(help_text="what was done, e.g. campaign.pause")
    kind = serializers.SerializerMethodField(help_text="create, update or delete")
    source = serializers.SerializerMethodField(help_text="admin, api or command")
    actor = serializers.SerializerMethodField(help_text="username, or the OS user of a command")
    actor_id = serializers.IntegerField(read_only=True, allow_null=True)
    object_type = serializers.SerializerMethodField(help_text="app_label.model")
    object_id = serializers.CharField(source="object_pk", read_only=True)
    detail = serializers.SerializerMethodField()

    class Meta:
        model = LogEntry
        fields = ["id", "timestamp", "action", "kind", "source", "actor", "actor_id", "remote_addr", "object_type",
                  "object_id", "object_repr", "changes", "detail"]  # fmt: skip
        read_only_fields = fields

    def _extra(self, entry: LogEntry) -> dict:
        return entry.additional_data if isinstance(entry.additional_data, dict) else {}

    def get_action(self, entry: LogEntry) -> str:
        return self._extra(entry).get("action", "")

    def get_kind(self, entry: LogEntry) -> str:
        return _KIND_NAMES.get(entry.action, "")

    def get_source(self, entry: LogEntry) -> str:
        return self._extra(entry).get("source", "")

    def get_actor(self, entry: LogEntry) -> str:
        return self._extra(entry).get("actor", "")

    def get_object_type(self, entry: LogEntry) -> str:
        return f"{entry.content_type.app_label}.{entry.content_type.model}"

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_detail(self, entry: LogEntry) -> dict:
        return self._extra(entry).get("detail") or {}


@extend_schema(tags=["audit"])
class AuditEntryViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit trail: operators' actions with who, when, what and from where; newest first."""

    serializer_class = AuditEntrySerializer
    filterset_class = AuditEntryFilter
    queryset = LogEntry.objects.none()  # the model, for the schema

    def get_queryset(self) -> QuerySet[LogEntry]:
        return audit_entry_list()
