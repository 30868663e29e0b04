"""Live updates of work orders: a full snapshot (`workorders.selectors.workorder_snapshot`) to the work order's
group (`workorder-<id>`) after commit (emailsys.live), with the HTML of its live parts; the dashboard (its running
work orders) is told, coalesced.

`workorder_fragments` is the one renderer of those parts: the admin's list and change page render them at load
from `live_current("workorder", id)` and the messages carry the same ones, so a page looks the same whether it
was just loaded or kept up to date."""

from datetime import datetime

from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from emailsys.live import SINGLETON_ID, LiveKind, live_changed, live_kind_register, live_progress
from workorders.models import WorkOrder, WorkOrderStep
from workorders.selectors import workorder_snapshot

# The templates (templates/live/) of the element ids `workorder-<id>-<part>`: list cells and change-page parts.
FRAGMENT_TEMPLATES = {
    "status": "live/workorder_status.html",
    "lock": "live/workorder_lock.html",
    "step": "live/workorder_step.html",
    "resume": "live/workorder_resume.html",
    "panel": "live/workorder_panel.html",
}
FINISHED_STEP = ("complete", "error", "exception", "interrupted")
ACTIVE_STEP = ("working", "sleeping")


def workorder_fragment_id(work_order_id: int, part: str) -> str:
    return f"workorder-{work_order_id}-{part}"


def workorder_fragments(work_order_id: int, payload: dict) -> dict[str, str]:
    """Element id → HTML of the work order's live parts (FRAGMENT_TEMPLATES), from a payload of emailsys.live."""
    context = workorder_live_context(payload)
    return {
        workorder_fragment_id(work_order_id, part): render_to_string(template, context)
        for part, template in FRAGMENT_TEMPLATES.items()
    }


def workorder_live_context(payload: dict) -> dict:
    """What the templates show, from the snapshot: labels, parsed times, per step a progress with rate and ETA.
    Keys the snapshot may lack (an older worker's message) fall back to what can be derived."""
    data = payload["data"]
    status = data.get("status", "")
    steps = [_step_context(step) for step in data.get("steps", [])]
    artifacts = data.get("artifacts") or {}
    return {
        "id": payload["id"],
        "key": payload["key"],
        "version": payload["version"],
        "status": status,
        "status_label": data.get("status_label") or _label(WorkOrder.Status, status),
        "running": status in ("queued", "working"),
        "stop_requested": bool(data.get("stop_requested")),
        "lock_owner": data.get("lock_owner") or "",
        "lock_expires_at": _time(data.get("lock_expires_at")),
        "resume_at": _time(data.get("resume_at")),
        "auto_approve": data.get("auto_approve"),
        "approved_at": _time(data.get("approved_at")),
        "approved_by": data.get("approved_by") or "",
        "steps": steps,
        "current": _current_step(steps),
        "dry_run": _artifact(artifacts.get("dry_run")),
        "prepared": [a for a in (_artifact(item) for item in artifacts.get("prepared") or []) if a],
        "test_sends": [{**send, "sent_at": _time(send.get("sent_at"))} for send in data.get("test_sends") or []],
        "counts": _counts(data.get("counts") or {}),
    }


def _counts(counts: dict) -> list[tuple[str, object]]:
    """The Count step's result as (label, number) tiles: eligible per language, then those left out."""
    by_language = counts.get("by_language") if isinstance(counts.get("by_language"), dict) else {}
    tiles: list[tuple[str, object]] = []
    if by_language:
        tiles.append(("Eligible", sum(n for n in by_language.values() if isinstance(n, int))))
        tiles += [(f"In {language}", number) for language, number in sorted(by_language.items())]
    if "other_languages" in counts:
        tiles.append(("Other languages (not sent)", counts["other_languages"]))
    if "already_sent" in counts:
        tiles.append(("Already had this mailing", counts["already_sent"]))
    return tiles


def _label(choices, value: str) -> str:
    try:
        return str(choices(value).label)
    except ValueError:
        return value.replace("_", " ").capitalize()


def _time(value: str | None) -> datetime | None:
    parsed = parse_datetime(value) if isinstance(value, str) else None
    return timezone.localtime(parsed) if parsed and timezone.is_aware(parsed) else parsed


def _artifact(item) -> dict | None:
    """An artifact as a link: the snapshot gives a URL, or a dict with `url` and a label."""
    if not item:
        return None
    if isinstance(item, str):
        return {"url": item, "label": item.rsplit("/", 1)[-1]}
    if not isinstance(item, dict) or not item.get("url"):
        return None
    label = item.get("label") or item.get("language") or item.get("name") or "download"
    return {**item, "label": label}


def duration_text(seconds: float | None) -> str:
    """12 s, 3 min 4 s, 2 h 5 min; empty for unknown."""
    if seconds is None:
        return ""
    seconds = max(0, round(float(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _step_context(step: dict) -> dict:
    rate = step.get("rate_per_second")
    return {
        **step,
        "label": step.get("label") or _label(WorkOrderStep.Name, step.get("name", "")),
        "status_label": step.get("status_label") or _label(WorkOrderStep.Status, step.get("status", "")),
        "done": step.get("done") or 0,
        "total": step.get("total") or 0,
        "rate": f"{rate:.1f}/s" if isinstance(rate, int | float) and rate > 0 else "",
        "eta": duration_text(step.get("eta_seconds")) if step.get("status") == "working" else "",
        "started_at": _time(step.get("started_at")),
        "ended_at": _time(step.get("ended_at")),
    }


def _current_step(steps: list[dict]) -> dict | None:
    """The step to show in a list row: the one running, else the last one that ran."""
    for step in steps:
        if step.get("status") in ACTIVE_STEP:
            return step
    ran = [step for step in steps if step.get("status") != "ready"]
    return ran[-1] if ran else None


def workorder_live_register() -> None:
    live_kind_register(
        LiveKind(
            name="workorder",
            model=WorkOrder,
            snapshot=lambda work_order_id: workorder_snapshot(work_order_id=work_order_id),
            render=workorder_fragments,
        )
    )


def workorder_broadcast(*, work_order_id: int) -> None:
    """Call inside the transaction that made the change: its version is incremented there, clients get the
    snapshot once it is committed."""
    live_changed("workorder", work_order_id)
    live_progress("dashboard", SINGLETON_ID)  # its running work orders, coalesced: a dashboard read costs more
