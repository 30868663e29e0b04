"""Import jobs: an uploaded file, previewed, then imported by a worker with the commands' own services
(`campaigns.services.imports.leads_import_csv` / `campaign_import`, `workorders.services.contacts.
contacts_import_csv`), so the admin, the API and `manage.py import_*` accept the same files and give the same
report.

Lifecycle (`ImportJob.Status`): `import_job_create` checks the file as a whole (size, type, a usable CSV header
or parseable YAML/JSON) and stores it in the configured storage — a bad file is a ValidationError and nothing is
stored; `import_job_start` queues it (after commit); the task `transfers.import_job_run` claims it and runs the
service, publishing progress (bytes read) to the job's live group; the report lands on the row.
"""

import csv
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import IO

from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import transaction
from django.db.models import Q

from audit.context import audit_context
from campaigns.models import Campaign
from campaigns.services.imports import (
    LEAD_COLUMNS,
    REQUIRED_COLUMNS,
    campaign_data_parse,
    campaign_import,
    leads_import_csv,
)
from emailsys import clock
from emailsys.imports import CsvRecords, ImportReport
from emailsys.live import live_changed, live_version_bump
from transfers.models import ImportJob
from workorders.services.contacts import CONTACT_COLUMNS, contacts_import_csv

logger = logging.getLogger(__name__)

# Larger files are refused at upload: 100k leads with a few custom columns are ~15 MB.
IMPORT_MAX_BYTES = 100 * 1024 * 1024
PREVIEW_ROWS = 10
PROGRESS_STEPS = 20  # a progress message every 5 % of the file read
# A run of the task may take this long (100k leads take well under a minute); a job running for longer than this
# lost its worker and may be claimed again.
IMPORT_TIME_LIMIT_SECONDS = 1800
CSV_SUFFIXES = ("csv", "txt")
CAMPAIGN_SUFFIXES = ("json", "yaml", "yml")

# What may start each kind of import: the import permission and the add/change permissions of what it writes.
KIND_PERMISSIONS: dict[str, tuple[str, ...]] = {
    ImportJob.Kind.LEADS: ("campaigns.import_campaign", "campaigns.add_lead", "campaigns.change_lead",
                           "campaigns.add_recipient", "campaigns.change_recipient"),
    ImportJob.Kind.CAMPAIGN: ("campaigns.import_campaign", "campaigns.add_campaign", "campaigns.add_sequencestep",
                              "campaigns.add_emailtemplate"),
    ImportJob.Kind.CONTACTS: ("workorders.import_contacts", "workorders.add_contact", "workorders.change_contact"),
}  # fmt: skip
CSV_FORMATS = {  # kind → (known columns, required columns, example header)
    ImportJob.Kind.LEADS: (LEAD_COLUMNS, REQUIRED_COLUMNS, "lead_id,email,..."),
    ImportJob.Kind.CONTACTS: (CONTACT_COLUMNS, ("email",), "email,name,language,..."),
}
COLUMN_MEANINGS = {
    ImportJob.Kind.LEADS: {"lead_id": "Lead id (your id; rows with one id are one lead)", "email": "Recipient email",
                           "name": "Recipient name", "first_name": "First name", "last_name": "Last name",
                           "company_name": "Company", "website": "Website", "provider": "Provider"},
    ImportJob.Kind.CONTACTS: {"email": "Contact email", "name": "Name", "language": "Language",
                              "subscribed": "Subscribed (yes/no)", "attributes": "Attributes (JSON object)"},
}  # fmt: skip
CUSTOM_MEANING = {ImportJob.Kind.LEADS: "Custom lead field", ImportJob.Kind.CONTACTS: "Text attribute"}


def import_job_permissions(*, kind: str) -> tuple[str, ...]:
    """Everything a user must hold to upload and start an import of `kind`."""
    return ("transfers.add_importjob", *KIND_PERMISSIONS[kind])


# --- upload ---------------------------------------------------------------------------------------------------


def import_job_create(
    *, kind: str, file: IO[bytes], file_name: str, file_size: int, campaign: Campaign | None, user, source: str
) -> ImportJob:
    """Checks the file as a whole and stores it; ValidationError (nothing stored) for a file that cannot be
    imported at all. Rows are not checked here: bad rows are the report's, after the run."""
    if kind not in ImportJob.Kind.values:
        raise ValidationError(f"Unknown import kind {kind!r}.")
    if kind == ImportJob.Kind.LEADS and campaign is None:
        raise ValidationError("Choose the campaign the leads go to.")
    if kind != ImportJob.Kind.LEADS:
        campaign = None
    suffix = file_name.rsplit(".", 1)[-1].lower() if "." in file_name else ""
    allowed = CAMPAIGN_SUFFIXES if kind == ImportJob.Kind.CAMPAIGN else CSV_SUFFIXES
    if suffix not in allowed:
        raise ValidationError(f"{file_name}: expected a {' or '.join('.' + s for s in allowed)} file.")
    if file_size == 0:
        raise ValidationError(f"{file_name} is empty.")
    if file_size > IMPORT_MAX_BYTES:
        raise ValidationError(f"{file_name} is {file_size:,} bytes; the largest import is {IMPORT_MAX_BYTES:,} bytes.")
    file.seek(0)
    _file_check(kind=kind, file=file, file_name=file_name)
    file.seek(0)
    job = ImportJob(kind=kind, campaign=campaign, file_name=file_name[:255], file_size=file_size, created_by=user,
                    source=source)  # fmt: skip
    job.file.save(file_name[-100:], File(file), save=False)  # the storage picks a free name
    job.save()
    return job


def _file_check(*, kind: str, file: IO[bytes], file_name: str) -> None:
    if kind == ImportJob.Kind.CAMPAIGN:
        campaign_data_parse(text=_text(file.read(), file_name), file_name=file_name)
        return
    if b"\0" in file.read(4096):
        file.seek(0)
        raise ValidationError(f"{file_name} is not a CSV file (it holds binary data); save it as CSV UTF-8.")
    file.seek(0)
    _known, required, example = CSV_FORMATS[kind]
    CsvRecords(file, required=required, example=example, errors=[])  # the header, or ValidationError


def _text(data: bytes, file_name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValidationError(
            f"{file_name} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); save it as UTF-8."
        ) from None


# --- preview --------------------------------------------------------------------------------------------------


@dataclass
class ImportPreview:
    """The first rows as the file has them and what each column becomes; a campaign file's outline."""

    columns: list[tuple[str, str]] = field(default_factory=list)  # (column, what it becomes)
    rows: list[list[str]] = field(default_factory=list)
    row_errors: list[tuple[int, str]] = field(default_factory=list)  # within the previewed lines
    outline: dict = field(default_factory=dict)
    error: str = ""


def import_job_preview(*, job: ImportJob) -> ImportPreview:
    preview = ImportPreview()
    try:
        with job.file.open("rb") as handle:
            if job.kind == ImportJob.Kind.CAMPAIGN:
                preview.outline = _campaign_outline(campaign_data_parse(text=_text(handle.read(), job.file_name),
                                                                        file_name=job.file_name))  # fmt: skip
                return preview
            known, required, example = CSV_FORMATS[job.kind]
            records = CsvRecords(handle, required=required, example=example, errors=preview.row_errors)
            meanings = COLUMN_MEANINGS[job.kind]
            preview.columns = [
                (name, meanings.get(name) or (f"{CUSTOM_MEANING[job.kind]} “{name}”" if name else "Ignored (no name)"))
                for name in records.header
            ]
            for record in records:
                preview.rows.append([record.values[name] for name in records.header])
                if len(preview.rows) >= PREVIEW_ROWS:
                    break
    except ValidationError as error:
        preview.error = " ".join(error.messages)
    except OSError as error:
        preview.error = f"The stored file cannot be read ({error})."
    return preview


def _campaign_outline(data: dict) -> dict:
    steps = data.get("steps") if isinstance(data.get("steps"), list) else []
    accounts = data.get("accounts") if isinstance(data.get("accounts"), list) else []

    def template_name(step) -> str:
        template = step.get("template") if isinstance(step, dict) else None
        return template.get("name", "") if isinstance(template, dict) else str(template or "")

    return {
        "name": str(data.get("name") or ""),
        "status": str(data.get("status") or "draft"),
        "time_zone": str(data.get("time_zone") or "UTC"),
        "steps": [
            {"order": step.get("order", index + 1), "delay": step.get("delay", step.get("delay_seconds", 0)),
             "template": template_name(step)}
            for index, step in enumerate(steps) if isinstance(step, dict)
        ],
        "accounts": [str(account.get("email", "")) for account in accounts if isinstance(account, dict)],
    }  # fmt: skip


# --- start and run --------------------------------------------------------------------------------------------


def import_job_start(*, job_id: int) -> ImportJob:
    """Queues an uploaded job (its task is sent after commit); ValidationError when it was started already."""
    from transfers.tasks import import_job_run_task

    with transaction.atomic():
        started = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.UPLOADED).update(
            status=ImportJob.Status.QUEUED
        )
        if not started:
            job = ImportJob.objects.get(pk=job_id)
            raise ValidationError(f"This import is {job.get_status_display().lower()}; it can be started once.")
        live_changed("importjob", job_id)
        import_job_run_task.delay_on_commit(job_id)
    return ImportJob.objects.get(pk=job_id)


class _ProgressReader:
    """The stored file, iterated by line (as CsvRecords reads it), calling `report(bytes_read)` every 1/PROGRESS_
    STEPS of the file."""

    def __init__(self, file: IO[bytes], size: int, report: Callable[[int], None]) -> None:
        self._file, self._report = file, report
        self._step = max(1, size // PROGRESS_STEPS)
        self._next = self._step
        self.read = 0

    def __iter__(self) -> Iterator[bytes]:
        for line in self._file:
            self.read += len(line)
            if self.read >= self._next:
                self._next = (self.read // self._step + 1) * self._step
                self._report(self.read)
            yield line


def import_job_run(*, job_id: int) -> None:
    """Claims a queued job (or one whose worker died: running for longer than the task time limit) and imports
    its file. Safe to run twice: the claim admits one run, and every import service is idempotent per file, so a
    rerun after a lost worker creates nothing twice. Progress is published, not kept in a transaction: the
    services read the whole file before their own transaction."""
    now = clock.now()
    stale = now - timedelta(seconds=IMPORT_TIME_LIMIT_SECONDS)
    claimed = ImportJob.objects.filter(
        Q(status=ImportJob.Status.QUEUED) | Q(status=ImportJob.Status.RUNNING, started_at__lt=stale), pk=job_id
    ).update(status=ImportJob.Status.RUNNING, started_at=now, bytes_read=0, **live_version_bump())
    if not claimed:
        return
    live_changed("importjob", job_id)
    job = ImportJob.objects.select_related("campaign", "created_by").get(pk=job_id)

    def progress(read: int) -> None:
        ImportJob.objects.filter(pk=job_id).update(bytes_read=min(read, job.file_size))
        live_changed("importjob", job_id)

    actor = job.created_by.get_username() if job.created_by else "unknown"
    try:
        with audit_context(source=job.source, command_user=actor), job.file.open("rb") as handle:
            reader = _ProgressReader(handle, job.file_size, progress)
            if job.kind == ImportJob.Kind.LEADS:
                outcome: ImportReport | Campaign = leads_import_csv(campaign=job.campaign, file=reader)
            elif job.kind == ImportJob.Kind.CONTACTS:
                outcome = contacts_import_csv(file=reader)
            else:
                text = _text(handle.read(), job.file_name)
                outcome = campaign_import(data=campaign_data_parse(text=text, file_name=job.file_name))
    except ValidationError as error:
        _finish(job_id, status=ImportJob.Status.FAILED, error="\n".join(error.messages))
    except Exception as error:
        logger.exception("import job %s failed", job_id)
        _finish(job_id, status=ImportJob.Status.FAILED,
                error=f"The import stopped on an unexpected error ({type(error).__name__}); nothing was imported. "
                      "The worker's log has the details.")  # fmt: skip
    else:
        if isinstance(outcome, Campaign):
            _finish(job_id, status=ImportJob.Status.DONE, created=1, result_campaign=outcome)
        else:
            _finish(job_id, status=ImportJob.Status.DONE, skipped_rows=[list(row) for row in outcome.errors],
                    **{name: value for name, value in outcome.counts().items()})  # fmt: skip


def _finish(job_id: int, *, status: str, **values) -> None:
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(pk=job_id)
        values.setdefault("bytes_read", job.file_size)
        ImportJob.objects.filter(pk=job_id).update(status=status, finished_at=clock.now(), **values)
        live_changed("importjob", job_id)


# --- report ---------------------------------------------------------------------------------------------------

REPORT_HEADER = ("result", "count", "line", "reason")


def import_report_rows(*, job: ImportJob) -> Iterator[tuple]:
    """The report as CSV rows: one per count, then one per skipped line with its reason (`REPORT_HEADER`)."""
    yield ("status", "", "", job.get_status_display())
    if job.error:
        yield ("error", "", "", job.error)
    for name in ("created", "updated", "unchanged", "skipped"):
        yield (name, getattr(job, name), "", "")
    if job.kind == ImportJob.Kind.LEADS:
        yield ("leads created", job.leads_created, "", "")
        yield ("leads updated", job.leads_updated, "", "")
    for line, reason in job.skipped_rows:
        yield ("skipped", "", line, reason)


def csv_line(values) -> str:
    """One CSV record as text (the exports' writer)."""
    buffer = _Line()
    csv.writer(buffer).writerow(values)
    return buffer.text


class _Line:
    text = ""

    def write(self, value: str) -> None:
        self.text += value
