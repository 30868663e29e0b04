"""An import job: one uploaded file, imported by a worker with the same service as the matching command
(`import_leads`, `import_campaign`, `import_contacts`), and its report."""

from django.conf import settings
from django.db import models
from django.db.models import Q


class ImportJob(models.Model):
    """uploaded (preview shown, nothing imported) → queued → running → done | failed.

    The file lives in the configured storage (`STORAGES["default"]`), never in the request: the worker reads it
    from there. Counts and skipped rows are the service's `ImportReport`; `error` is why the file as a whole was
    refused (header unusable, bad YAML, a campaign that does not validate)."""

    class Kind(models.TextChoices):
        LEADS = "leads", "Leads (CSV) into a campaign"
        CAMPAIGN = "campaign", "Campaign (YAML or JSON)"
        CONTACTS = "contacts", "Contacts (CSV)"

    class Status(models.TextChoices):
        UPLOADED = "uploaded", "Uploaded (not started)"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    FINISHED = (Status.DONE, Status.FAILED)

    kind = models.CharField(max_length=10, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.UPLOADED)
    campaign = models.ForeignKey(
        "campaigns.Campaign", null=True, blank=True, on_delete=models.CASCADE, related_name="+",
        help_text="Where a leads file goes.",
    )  # fmt: skip
    file = models.FileField(upload_to="imports/%Y/%m/", max_length=300)
    file_name = models.CharField(max_length=255, help_text="The name the file was uploaded with.")
    file_size = models.PositiveBigIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")  # fmt: skip
    source = models.CharField(max_length=10, default="admin", help_text="admin or api: for the audit trail.")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    bytes_read = models.PositiveBigIntegerField(default=0, help_text="Progress: bytes of the file read so far.")
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    leads_created = models.PositiveIntegerField(default=0)
    leads_updated = models.PositiveIntegerField(default=0)
    skipped_rows = models.JSONField(default=list, blank=True, help_text="[[line, reason], ...] (header = line 1).")
    error = models.TextField(blank=True)
    result_campaign = models.ForeignKey(
        "campaigns.Campaign", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The campaign a campaign file created.",
    )  # fmt: skip
    live_version = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind="leads", campaign__isnull=False) | (~Q(kind="leads") & Q(campaign__isnull=True)),
                name="import_job_campaign_iff_leads",
                violation_error_message="A leads import names its campaign; other imports name none.",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["done", "failed"], finished_at__isnull=False)
                | (~Q(status__in=["done", "failed"]) & Q(finished_at__isnull=True)),
                name="import_job_finished_iff_done_or_failed",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["uploaded", "queued"]) | Q(started_at__isnull=False),
                name="import_job_started_when_running",
            ),
            models.CheckConstraint(
                condition=~Q(status="failed") | ~Q(error=""),
                name="import_job_failure_says_why",
                violation_error_message="A failed import says why.",
            ),  # fmt: skip
            models.CheckConstraint(condition=Q(bytes_read__lte=models.F("file_size")), name="import_job_read_le_size"),
        ]
        indexes = [models.Index(fields=["status"], name="import_job_status")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.file_name} ({self.get_status_display().lower()})"

    @property
    def percent(self) -> int:
        """Progress shown on the page: reading the file is 0–95 %, writing the rows the rest."""
        if self.status == self.Status.DONE:
            return 100
        if not self.file_size:
            return 0
        return min(95, self.bytes_read * 95 // self.file_size)
