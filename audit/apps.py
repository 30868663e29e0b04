from django.apps import AppConfig


class AuditConfig(AppConfig):
    """The audit trail of operator actions, stored in django-auditlog's `auditlog.LogEntry` (this app has no
    models of its own). `ready` taps the edits of the models in `audit.edits.TRACKED_EDITS`."""

    name = "audit"
    verbose_name = "Audit trail"

    def ready(self) -> None:
        from audit.edits import edits_track

        edits_track()
