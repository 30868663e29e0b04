"""Live updates of campaigns and sender accounts (emailsys.live): kinds "campaign" and "account", their snapshots
(`campaigns.selectors.campaign_snapshot`, `account_snapshot`) and the fragments the admin pages show.

The fragments are rendered here only, from a snapshot: the admin renders the page at load through the same
functions (the list pages from their rows' annotations, `campaign_row_cells` / `account_cells`), so a message
replaces an element with exactly what a reload would show. Element ids are `<key>-<part>`, e.g.
`campaign-7-sent-today`; each carries `data-live-key` and `data-live-v` (live.js's page contract).

Who announces: state transitions call `campaign_live_changed` / `account_live_changed` inside their transaction;
the sending path calls `campaign_live_progress` for each send's outcome and `account_live_progress` for each
reservation and once per account at the end of a batch's sends (coalesced: at most a few messages a second per
object, whatever the rate; an account per batch, because twenty unthrottled accounts send at once).
"""

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.template.loader import get_template
from django.urls import reverse
from django.utils import timezone
from django.utils.text import Truncator

from campaigns.models import Campaign, SenderAccount
from campaigns.selectors import account_snapshot, campaign_snapshot
from emailsys import clock
from emailsys.live import LiveKind, live_changed, live_kind_register, live_progress

CAMPAIGN_KIND, ACCOUNT_KIND = "campaign", "account"
CAMPAIGN_COUNT_CELLS = {  # fragment part → (label, where in the snapshot)
    "in-progress": ("leads in progress", ("leads", "in_progress")),
    "finished": ("leads finished", ("leads", "finished")),
    "stopped": ("leads stopped", ("leads", "stopped")),
    "sent-today": ("sent today", ("sent_today",)),
}
SEND_COLUMN_LABELS = {"sent": "Sent", "queued": "Queued", "deferred": "Deferred", "failed": "Failed",
                      "bounced": "Bounced", "unknown": "Unknown", "skipped": "Skipped"}  # fmt: skip


def campaign_live_register() -> None:
    live_kind_register(
        LiveKind(
            name=CAMPAIGN_KIND,
            model=Campaign,
            render=campaign_fragments,
            snapshot=lambda campaign_id: campaign_snapshot(campaign_id=campaign_id),
        )
    )
    live_kind_register(
        LiveKind(
            name=ACCOUNT_KIND,
            model=SenderAccount,
            render=account_fragments,
            snapshot=lambda account_id: account_snapshot(account_id=account_id),
        )
    )


def campaign_live_changed(campaign_id: int) -> None:
    """Inside the transaction of a state transition (status, a lead stopped or replied): pages get it on commit."""
    live_changed(CAMPAIGN_KIND, campaign_id)


def account_live_changed(account_id: int) -> None:
    live_changed(ACCOUNT_KIND, account_id)


def campaign_live_progress(campaign_id: int | None) -> None:
    """Hot path (a send's outcome, an activity): a set insertion now, a coalesced message later."""
    if campaign_id is not None:
        live_progress(CAMPAIGN_KIND, campaign_id)


def account_live_progress(account_id: int | None) -> None:
    if account_id is not None:
        live_progress(ACCOUNT_KIND, account_id)


def live_renderers_warm(**kwargs: Any) -> None:
    """Celery's `worker_init`: the URLconf and the fragment templates are loaded when a worker starts, not by its
    first live message (importing the admin's URLconf for the fragments' links costs ~0.2 s of CPU, which a
    sending worker would otherwise pay in the middle of a campaign, holding the first message back as long)."""
    reverse("admin:campaigns_lead_change", args=[0])
    for name in LIVE_TEMPLATES:
        get_template(f"live/{name}.html")


# --- rendering -------------------------------------------------------------------------------------------------

LIVE_TEMPLATES = ("campaign_status", "campaign_count", "campaign_unknown", "campaign_progress", "campaign_panel",
                  "campaign_activity", "account_status", "account_usage", "account_sent_today", "account_next",
                  "account_panel")  # fmt: skip


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, ZoneInfoNotFoundError):
        return ZoneInfo("UTC")


def _render(template: str, **context: Any) -> str:
    """Times show in the object's own time zone (`time_zone` in the context: where its day and limits are)."""
    with timezone.override(_zone(context.get("time_zone"))):
        return get_template(f"live/{template}.html").render(context)


def _moment(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def campaign_cell_fragments(campaign_id: int, version: int, data: dict) -> dict[str, str]:
    """The list row's live cells (the change page shows the status badge too)."""
    key = f"{CAMPAIGN_KIND}-{campaign_id}"
    common = {"key": key, "version": version, "data": data}
    fragments = {f"{key}-status": _render("campaign_status", id=f"{key}-status", **common)}
    for part, (label, path) in CAMPAIGN_COUNT_CELLS.items():
        value: Any = data
        for name in path:
            value = value[name]
        fragments[f"{key}-{part}"] = _render("campaign_count", id=f"{key}-{part}", label=label, value=value, **common)
    records_url = reverse("admin:campaigns_sendrecord_changelist")
    unknown_url = f"{records_url}?campaign__id__exact={campaign_id}&state__exact=unknown"
    fragments[f"{key}-unknown"] = _render("campaign_unknown", id=f"{key}-unknown", url=unknown_url, **common)
    leads = data["leads"]
    done = leads["finished"] + leads["stopped"]
    fragments[f"{key}-progress"] = _render(
        "campaign_progress", id=f"{key}-progress", done=done, total=leads["total"],
        percent=round(100 * done / leads["total"]) if leads["total"] else 0, **common,
    )  # fmt: skip
    return fragments


def campaign_fragments(campaign_id: int, payload: dict) -> dict[str, str]:
    """Element id → HTML of every live part of a campaign: the list cells, the change page's panel and its
    activity stream."""
    key, version, data = payload["key"], payload["version"], payload["data"]
    fragments = campaign_cell_fragments(campaign_id, version, data)
    time_zone = data["time_zone"]
    now = clock.now()
    next_due = _moment(data["next_due_at"])
    zone = _zone(time_zone)
    lead_url = reverse("admin:campaigns_lead_change", args=[0]).replace("/0/", "/{}/")
    # Rows as text: the stream is the largest fragment, rendered a few times a second while the campaign sends.
    activities = [
        {"at": (at := datetime.fromisoformat(activity["at"])).isoformat(),
         "at_text": at.astimezone(zone).strftime("%b %-d, %H:%M:%S"), "kind": activity["kind"],
         "kind_label": activity["kind_label"], "message": Truncator(activity["message"]).chars(160),
         "lead_id": activity["lead_id"],
         "lead_url": lead_url.format(activity["lead_id"]) if activity["lead_id"] else ""}
        for activity in data["activities"]
    ]  # fmt: skip
    steps = [{**step, "cells": [(column, step[column]) for column in SEND_COLUMN_LABELS]} for step in data["steps"]]
    totals = [(column, data["totals"][column]) for column in SEND_COLUMN_LABELS]
    common = {"key": key, "version": version, "data": data, "time_zone": time_zone}
    fragments[f"{key}-panel"] = _render(
        "campaign_panel", id=f"{key}-panel", next_due=next_due, due_now=bool(next_due and next_due <= now),
        columns=SEND_COLUMN_LABELS, steps=steps, totals=totals, **common,
    )  # fmt: skip
    fragments[f"{key}-activity"] = _render("campaign_activity", id=f"{key}-activity", activities=activities, **common)
    return fragments


def account_fragments(account_id: int, payload: dict) -> dict[str, str]:
    """Element id → HTML of a sender account's live parts: status (with the pause reason), today's usage against
    the limit, sent today, next available time, and the change page's panel of all of them."""
    key, version, data = payload["key"], payload["version"], payload["data"]
    time_zone = data["time_zone"]
    limit = data["daily_limit"]
    context = {
        "key": key, "version": version, "data": data, "time_zone": time_zone,
        "next_at": _moment(data["next_available_at"]), "busy_until": _moment(data["busy_until"]),
        "usage_percent": min(100, round(100 * data["reserved_today"] / limit)) if limit else 100,
        "full": data["reserved_today"] >= limit,
    }  # fmt: skip
    return {
        f"{key}-{part}": _render(f"account_{template}", id=f"{key}-{part}", **context)
        for part, template in (("status", "status"), ("usage", "usage"), ("sent-today", "sent_today"),
                               ("next", "next"), ("panel", "panel"))
    }  # fmt: skip
