"""Reading the audit trail: the entries the admin and the API list, newest first."""

from auditlog.models import LogEntry
from django.db.models import QuerySet


def audit_entry_list() -> QuerySet[LogEntry]:
    return LogEntry.objects.select_related("content_type", "actor").order_by("-timestamp", "-id")
