"""Imports and exports in the admin, beside the model admins rather than inside them.

- Import jobs: the list of jobs; "Add" is the upload page (kind, campaign, file) → the job page (preview of the
  first rows and the column mapping, a Start button, then the live progress bar and the report) → the report as
  CSV. Starting is a JSON POST (live.js's optimistic button) answering the job's live version.
- Exports: `/admin/transfers/importjob/export/<name>/?<a changelist's query>` streams the rows of that model's
  changelist as filtered and searched (the "Export CSV" link its change list template adds).

Every view checks its permissions: uploading and starting, `import_job_permissions(kind)`; a job's page and report,
`transfers.view_importjob`; an export, the view permissions of what it contains.
"""

from django import forms
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from campaigns.models import Campaign
from emailsys.live import live_current
from transfers.models import ImportJob
from transfers.services.exports import EXPORTS
from transfers.services.imports import (
    IMPORT_MAX_BYTES,
    import_job_create,
    import_job_permissions,
    import_job_preview,
    import_job_start,
)
from transfers.views import export_response, import_report_response


class ImportUploadForm(forms.Form):
    kind = forms.ChoiceField(label="What to import", choices=ImportJob.Kind.choices)
    campaign = forms.ModelChoiceField(
        queryset=Campaign.objects.order_by("name"), required=False, label="Campaign",
        help_text="For leads: the campaign they go to.",
    )  # fmt: skip
    file = forms.FileField(label="File", help_text="CSV (UTF-8) for leads and contacts; YAML or JSON for a campaign.")

    def __init__(self, *args, kinds: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = [(value, label) for value, label in ImportJob.Kind.choices if value in kinds]

    def clean(self) -> dict:
        data = super().clean()
        if data.get("kind") == ImportJob.Kind.LEADS and not data.get("campaign"):
            self.add_error("campaign", "Choose the campaign the leads go to.")
        return data


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "file_link", "campaign", "status", "created", "updated", "unchanged", "skipped",
                    "created_by", "created_at"]  # fmt: skip
    list_display_links = None
    list_filter = ["status", "kind", "campaign", "created_at"]
    search_fields = ["file_name", "created_by__username"]
    list_select_related = ["campaign", "created_by"]
    date_hierarchy = "created_at"
    actions = None  # a job is the record of an import: nobody edits or deletes it here

    @admin.display(description="File", ordering="file_name")
    def file_link(self, job: ImportJob) -> str:
        return format_html('<a href="{}">{}</a>', reverse("admin:transfers_importjob_change", args=[job.pk]),
                           job.file_name)  # fmt: skip

    def has_add_permission(self, request: HttpRequest) -> bool:
        return bool(self._kinds(request))

    def has_change_permission(self, request: HttpRequest, obj: ImportJob | None = None) -> bool:
        return False  # its page shows it; nothing edits it

    def has_delete_permission(self, request: HttpRequest, obj: ImportJob | None = None) -> bool:
        return False

    def _kinds(self, request: HttpRequest) -> list[str]:
        return [kind for kind in ImportJob.Kind.values if request.user.has_perms(import_job_permissions(kind=kind))]

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("upload/", view(self.upload_view), name="transfers_importjob_upload"),
            path("<int:job_id>/start/", view(self.start_view), name="transfers_importjob_start"),
            path("<int:job_id>/report.csv", view(self.report_view), name="transfers_importjob_report"),
            path("export/<slug:name>/", view(self.export_view), name="transfers_export"),
            *super().get_urls(),
        ]

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:transfers_importjob_upload"))

    def upload_view(self, request: HttpRequest) -> HttpResponse:
        kinds = self._kinds(request)
        if not kinds:
            raise PermissionDenied
        if request.method == "POST":
            form = ImportUploadForm(request.POST, request.FILES, kinds=kinds)
            if form.is_valid():
                upload = form.cleaned_data["file"]
                try:
                    job = import_job_create(
                        kind=form.cleaned_data["kind"], file=upload.file, file_name=upload.name,
                        file_size=upload.size, campaign=form.cleaned_data["campaign"], user=request.user,
                        source="admin",
                    )  # fmt: skip
                except ValidationError as error:
                    form.add_error("file", error)
                else:
                    return HttpResponseRedirect(reverse("admin:transfers_importjob_change", args=[job.pk]))
        else:
            initial = {key: request.GET[key] for key in ("kind", "campaign") if request.GET.get(key)}
            form = ImportUploadForm(initial=initial, kinds=kinds)
        context = {**self.admin_site.each_context(request), "title": "Import a file", "form": form,
                   "opts": self.model._meta, "max_mb": IMPORT_MAX_BYTES // (1024 * 1024)}  # fmt: skip
        return TemplateResponse(request, "admin/transfers/upload.html", context)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        job = get_object_or_404(ImportJob.objects.select_related("campaign"), pk=object_id)
        payload = live_current("importjob", job.pk)
        panel = payload["fragments"][f"importjob-{job.pk}-panel"]
        uploaded = job.status == ImportJob.Status.UPLOADED
        context = {
            **self.admin_site.each_context(request),
            "title": f"Import {job.pk}: {job.file_name}",
            "opts": self.model._meta,
            "job": job,
            "live": {"key": payload["key"], "panel": panel},
            "preview": import_job_preview(job=job) if uploaded else None,
        }
        return TemplateResponse(request, "admin/transfers/job.html", context)

    def start_view(self, request: HttpRequest, job_id: int) -> JsonResponse:
        """The Start button (live.js): POST only; {"version"} of the queued job, or {"detail"} with 4xx."""
        if request.method != "POST":
            return JsonResponse({"detail": "POST to start an import."}, status=405)
        job = ImportJob.objects.filter(pk=job_id).first()
        if job is None:
            return JsonResponse({"detail": "No such import."}, status=404)
        if not request.user.has_perms(import_job_permissions(kind=job.kind)):
            return JsonResponse({"detail": "You may not run this kind of import."}, status=403)
        try:
            job = import_job_start(job_id=job.pk)
        except ValidationError as error:
            return JsonResponse({"detail": " ".join(error.messages)}, status=409)
        return JsonResponse({"version": job.live_version, "status": job.status})

    def report_view(self, request: HttpRequest, job_id: int) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return import_report_response(job=get_object_or_404(ImportJob, pk=job_id))

    def export_view(self, request: HttpRequest, name: str) -> HttpResponse:
        """The model's changelist as filtered, searched and ordered by the query string, all pages, as CSV."""
        spec = EXPORTS.get(name)
        model_admin = self.admin_site._registry.get(spec.model) if spec else None
        if model_admin is None:
            raise Http404("No such export.")
        if not request.user.has_perms(spec.permissions) or not model_admin.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = model_admin.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponse("The list's filters in this link are not valid; export from the list again.",
                                status=400, content_type="text/plain; charset=utf-8")  # fmt: skip
        return export_response(request=request, spec=spec, queryset=changelist.get_queryset(request))
