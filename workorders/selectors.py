"""Work-order reads for the admin, the API, commands and live pages: querysets and small read models, each in
a few queries. Nothing here writes; the writes are `workorders.services`."""

import json
from dataclasses import dataclass
from datetime import datetime
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import formataddr

from django.core.files.storage import default_storage
from django.db.models import QuerySet
from django.urls import reverse

from emailsys import clock
from workorders.models import MailingSend, Segment, WorkOrder, WorkOrderStep
from workorders.services.mailings import NAME_MARKER
from workorders.services.segments import segment_contacts

# --- work orders -------------------------------------------------------------------------------------------


def workorder_list() -> QuerySet[WorkOrder]:
    """Newest first, each with its event and its steps: the API's list and detail (lease fields are on the row)."""
    return WorkOrder.objects.select_related("event").prefetch_related("steps").order_by("-id")


def workorder_snapshot(*, work_order_id: int) -> dict | None:
    """Full state for live clients and the change page (duplicates and reordering are harmless): the work order,
    its lease and approval, its steps in pipeline order with progress (rate, ETA), the Count step's counts, its
    artifacts' URLs and the Test step's emails; None when it is gone. JSON-able. Three queries (the work order with
    its event and approver, its steps, its test sends) and no storage access: artifacts come from the steps'
    results. The version is the live message's (emailsys.live)."""
    work_order = WorkOrder.objects.select_related("event", "approved_by").filter(id=work_order_id).first()
    if work_order is None:
        return None
    steps = list(WorkOrderStep.objects.filter(work_order_id=work_order_id).order_by("order"))
    by_name = {step.name: step for step in steps}
    now = clock.now()
    return {
        "type": "workorder",
        "id": work_order.id,
        "label": str(work_order),
        "status": work_order.status,
        "status_label": work_order.get_status_display(),
        "stop_requested": work_order.stop_requested,
        "auto_approve": work_order.auto_approve,
        "approved_at": _iso(work_order.approved_at),
        "approved_by": work_order.approved_by.get_username() if work_order.approved_by else None,
        "lock_owner": work_order.lock_owner,
        "lock_acquired_at": _iso(work_order.lock_acquired_at),
        "lock_expires_at": _iso(work_order.lock_expires_at),
        "resume_at": _iso(work_order.resume_at),
        "updated_at": _iso(work_order.updated_at),
        "counts": by_name[WorkOrderStep.Name.COUNT].result if WorkOrderStep.Name.COUNT in by_name else {},
        "steps": [_step_snapshot(step, now=now) for step in steps],
        "artifacts": _artifact_links(work_order.id, by_name),
        "test_sends": _test_sends(work_order.id, by_name.get(WorkOrderStep.Name.TEST)),
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _step_snapshot(step: WorkOrderStep, *, now: datetime) -> dict:
    """A step with its progress: the rate (done per second since the run started) and the ETA while it works."""
    rate = eta = None
    if step.status == WorkOrderStep.Status.WORKING and step.started_at and step.done:
        elapsed = (now - step.started_at).total_seconds()
        if elapsed > 0:
            rate = round(step.done / elapsed, 2)
            eta = round(max(0, step.total - step.done) / rate, 1) if rate > 0 and step.total else None
    return {
        "name": step.name,
        "label": step.get_name_display(),
        "status": step.status,
        "status_label": step.get_status_display(),
        "message": step.message,
        "done": step.done,
        "total": step.total,
        "started_at": _iso(step.started_at),
        "ended_at": _iso(step.ended_at),
        "rate_per_second": rate,
        "eta_seconds": eta,
        "result": step.result,
    }


def _test_sends(work_order_id: int, test_step: WorkOrderStep | None) -> list[dict]:
    """The emails of the Test step's latest run, as sent (links to their records in the admin)."""
    if test_step is None or not test_step.runs:
        return []
    sends = (
        MailingSend.objects.filter(work_order_id=work_order_id, is_test=True, test_run=test_step.runs)
        .order_by("email", "language")
        .values("id", "email", "language", "state", "subject", "sent_at")
    )
    return [
        {
            "email": send["email"],
            "language": send["language"],
            "state": send["state"],
            "subject": send["subject"],
            "sent_at": _iso(send["sent_at"]),
            "record_url": reverse("admin:workorders_mailingsend_change", args=[send["id"]]),
        }
        for send in sends
    ]


# --- artifacts ---------------------------------------------------------------------------------------------
# What the steps stored (default_storage, filesystem or S3), viewable through the app: Dry-Run's list as CSV
# and Prepare's email per language, shown as a message (.eml). Names are the URLs' last part; only names of
# this list are served, so a request never names a storage path.

DRY_RUN_ARTIFACT = "dry-run.csv"


@dataclass(frozen=True)
class Artifact:
    name: str  # "dry-run.csv", "prepared-en.eml"
    path: str  # in default_storage
    content_type: str  # what a download is
    language: str = ""


@dataclass(frozen=True)
class ArtifactContent:
    artifact: Artifact
    content: bytes


def prepared_artifact_name(language: str) -> str:
    return f"prepared-{language}.eml"


def _artifacts(by_name: dict[str, WorkOrderStep]) -> list[Artifact]:
    artifacts = []
    dry_run = by_name.get(WorkOrderStep.Name.DRY_RUN)
    if dry_run is not None and isinstance(dry_run.result, dict) and dry_run.result.get("file"):
        artifacts.append(Artifact(DRY_RUN_ARTIFACT, dry_run.result["file"], "text/csv"))
    prepare = by_name.get(WorkOrderStep.Name.PREPARE)
    files = prepare.result.get("files") if prepare is not None and isinstance(prepare.result, dict) else None
    for language, path in sorted((files or {}).items()):
        artifacts.append(Artifact(prepared_artifact_name(language), path, "message/rfc822", language))
    return artifacts


def _artifact_links(work_order_id: int, by_name: dict[str, WorkOrderStep]) -> dict:
    links: dict = {"dry_run": None, "prepared": []}
    for artifact in _artifacts(by_name):
        url = reverse("workorder-artifact", args=[work_order_id, artifact.name])
        if artifact.language:
            links["prepared"].append({"language": artifact.language, "name": artifact.name, "url": url})
        else:
            links["dry_run"] = {"name": artifact.name, "url": url}
    return links


def workorder_artifacts(*, work_order_id: int) -> list[Artifact]:
    """The work order's stored files (one query: its steps); a step run again replaces its file."""
    steps = WorkOrderStep.objects.filter(work_order_id=work_order_id)
    return _artifacts({step.name: step for step in steps})


def workorder_artifact_content(*, work_order_id: int, name: str) -> ArtifactContent | None:
    """One artifact's content, from whichever storage is configured; None for a name that is not one of the work
    order's artifacts or a file that is gone from storage. A prepared email is shown as the message it makes,
    the contact's name left as its marker."""
    artifact = next((a for a in workorder_artifacts(work_order_id=work_order_id) if a.name == name), None)
    if artifact is None:
        return None
    try:
        with default_storage.open(artifact.path, "rb") as handle:
            content = handle.read()
    except (FileNotFoundError, OSError):
        return None
    if artifact.language:
        content = _prepared_message(work_order_id, artifact, content)
    return ArtifactContent(artifact, content)


def _prepared_message(work_order_id: int, artifact: Artifact, stored: bytes) -> bytes:
    """Prepare's JSON (subject, text, html) as a MIME message, From and Reply-To as Send will set them."""
    prepared = json.loads(stored)
    work_order = WorkOrder.objects.select_related("account").get(id=work_order_id)
    message = EmailMessage(policy=email_policy.SMTP)
    message["Subject"] = prepared.get("subject", "")
    from_name = work_order.from_name or work_order.account.from_name
    message["From"] = formataddr((from_name, work_order.account.email))
    if work_order.reply_to:
        message["Reply-To"] = work_order.reply_to
    message["X-Emailsys-Preview"] = f"work order {work_order_id}, prepared email; {NAME_MARKER} becomes the name"
    try:  # 8bit keeps the text readable in the browser; lines over 998 characters need quoted-printable
        _set_bodies(message, prepared, cte="8bit")
    except ValueError:
        _set_bodies(message, prepared, cte="quoted-printable")
    message["Content-Language"] = artifact.language  # after the bodies: set_content drops Content-* headers
    return message.as_bytes()


def _set_bodies(message: EmailMessage, prepared: dict, *, cte: str) -> None:
    message.set_content(prepared.get("text", ""), cte=cte)
    if prepared.get("html"):
        message.add_alternative(prepared["html"], subtype="html", cte=cte)


# --- segments ----------------------------------------------------------------------------------------------


def segment_count(*, segment: Segment) -> int:
    """How many contacts `segment` makes eligible now: two queries (the segments' rules, then one COUNT).
    Raises ValidationError for a rule that went bad (see `segment_contacts`)."""
    return segment_contacts(segment=segment).count()


def segment_sample_emails(*, segment: Segment, limit: int) -> list[str]:
    """The addresses of the first `limit` contacts `segment` makes eligible now, by address. Raises
    ValidationError for a rule that went bad."""
    return list(segment_contacts(segment=segment).order_by("email").values_list("email", flat=True)[:limit])
