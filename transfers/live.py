"""Live import jobs: the job page's panel (status, progress bar, then the report) as one fragment, published to
the group `importjob-<id>` (emailsys.live) whenever the job's row changes; the page renders the same template at
load, so it looks the same whether just loaded or kept current."""

from django.template.loader import render_to_string
from django.urls import reverse

from emailsys.live import LiveKind, live_kind_register
from transfers.models import ImportJob

REPORT_ROWS_SHOWN = 200  # the page lists this many skipped rows; the CSV has them all


def import_job_snapshot(job_id: int) -> dict | None:
    job = ImportJob.objects.filter(pk=job_id).select_related("campaign", "result_campaign").first()
    if job is None:
        return None
    return {
        "status": job.status,
        "status_label": job.get_status_display(),
        "kind": job.kind,
        "percent": job.percent,
        "bytes_read": job.bytes_read,
        "file_size": job.file_size,
        "counts": {
            name: getattr(job, name)
            for name in ("created", "updated", "unchanged", "skipped", "leads_created", "leads_updated")
        },  # fmt: skip
        "skipped_rows": job.skipped_rows[:REPORT_ROWS_SHOWN],
        "error": job.error,
        "result_campaign": job.result_campaign_id,
        "campaign": job.campaign_id,
    }


def import_job_context(job_id: int, payload: dict) -> dict:
    data = payload["data"]
    finished = data["status"] in ImportJob.FINISHED
    return {
        "id": job_id,
        "key": payload["key"],
        "version": payload["version"],
        **data,
        "finished": finished,
        "running": data["status"] in (ImportJob.Status.QUEUED, ImportJob.Status.RUNNING),
        "more_skipped": max(0, data["counts"]["skipped"] - len(data["skipped_rows"])),
        "report_url": reverse("admin:transfers_importjob_report", args=[job_id]),
        "start_url": reverse("admin:transfers_importjob_start", args=[job_id]),
        "leads_url": reverse("admin:campaigns_lead_changelist") + f"?campaign__id__exact={data['campaign']}"
        if data.get("campaign") else "",
        "campaign_url": reverse("admin:campaigns_campaign_change", args=[data["result_campaign"]])
        if data.get("result_campaign") else "",
    }  # fmt: skip


def import_job_fragments(job_id: int, payload: dict) -> dict[str, str]:
    return {f"importjob-{job_id}-panel": render_to_string("live/importjob_panel.html",
                                                           import_job_context(job_id, payload))}  # fmt: skip


def import_job_live_register() -> None:
    live_kind_register(LiveKind(name="importjob", model=ImportJob, snapshot=import_job_snapshot,
                                render=import_job_fragments))  # fmt: skip
