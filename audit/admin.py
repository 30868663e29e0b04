"""The audit trail in the admin: read-only for everyone, superusers included (no add, change or delete, no
delete action); filterable by user, source, action, object type and date. Replaces django-auditlog's own
LogEntry admin, whose filters know nothing of sources and actions."""

import json

from auditlog.admin import LogEntryAdmin
from auditlog.models import LogEntry
from django.contrib import admin
from django.contrib.contenttypes.models import ContentType
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from audit.actions import AuditAction
from audit.context import AuditSource
from audit.selectors import audit_entry_list
from emailsys.admin import preformatted


class _ChoiceFilter(admin.SimpleListFilter):
    """One value of an `additional_data` key, from a fixed set of choices (an unknown value filters nothing)."""

    key = ""
    options: type = AuditSource

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return list(self.options.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value in self.options.values:
            return queryset.filter(**{f"additional_data__{self.key}": value})
        return queryset


class SourceFilter(_ChoiceFilter):
    title = "source"
    parameter_name = "source"
    key = "source"
    options = AuditSource


class ActionFilter(_ChoiceFilter):
    title = "action"
    parameter_name = "audit_action"
    key = "action"
    options = AuditAction


class ObjectTypeFilter(admin.SimpleListFilter):
    """The object types the trail holds entries for; a value that is not one of them filters nothing."""

    title = "object type"
    parameter_name = "object_type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        ids = LogEntry.objects.values_list("content_type_id", flat=True).distinct().order_by()
        types = ContentType.objects.filter(id__in=ids).order_by("app_label", "model")
        return [(str(t.id), f"{t.app_label}.{t.model}") for t in types]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value() or ""
        return queryset.filter(content_type_id=int(value)) if value.isascii() and value.isdigit() else queryset


class AuditEntryAdmin(LogEntryAdmin):
    list_display = ["created", "audit_action", "source", "actor_name", "resource_url", "msg_short", "remote_addr"]
    list_filter = [("actor", admin.RelatedOnlyFieldListFilter), SourceFilter, ActionFilter, ObjectTypeFilter,
                   "timestamp"]  # fmt: skip
    readonly_fields = ["created", "audit_action", "source", "actor_name", "user_url", "remote_addr", "resource_url",
                       "msg", "detail"]  # fmt: skip
    fieldsets = [
        (None, {"fields": ["created", "audit_action", "source", "actor_name", "user_url", "remote_addr",
                           "resource_url"]}),
        ("Changes", {"fields": ["msg", "detail"]}),
    ]  # fmt: skip
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[LogEntry]:
        self.request = request
        return audit_entry_list()

    def has_delete_permission(self, request: HttpRequest, obj: LogEntry | None = None) -> bool:
        return False

    @admin.display(description="Action")
    def audit_action(self, entry: LogEntry) -> str:
        return _data(entry).get("action") or entry.get_action_display()

    @admin.display(description="Source")
    def source(self, entry: LogEntry) -> str:
        return _data(entry).get("source", "")

    @admin.display(description="By")
    def actor_name(self, entry: LogEntry) -> str:
        return _data(entry).get("actor") or (entry.actor.get_username() if entry.actor else "")

    @admin.display(description="Changes")
    def msg_short(self, entry: LogEntry) -> str:
        return ", ".join(entry.changes_dict) if entry.changes else ""

    @admin.display(description="Detail")
    def detail(self, entry: LogEntry):
        detail = _data(entry).get("detail")
        return preformatted(json.dumps(detail, indent=2, ensure_ascii=False)) if detail else format_html("—")


def _data(entry: LogEntry) -> dict:
    return entry.additional_data if isinstance(entry.additional_data, dict) else {}


admin.site.unregister(LogEntry)
admin.site.register(LogEntry, AuditEntryAdmin)
