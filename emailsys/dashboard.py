"""The operations dashboard (the admin's front page): one live kind, `dashboard` (a singleton: group, key and page
element key "dashboard"), whose snapshot says how sending and the system stand now, rendered as panels by the
templates/live/dashboard_*.html fragments — the same ones at page load (`dashboard_page`) and in live messages.

When it is published:
- at once (coalesced to LIVE_PROGRESS_SECONDS) whenever an activity is recorded (campaigns.services.activities):
  sends, skips, failures and status changes move the stream, sends today and the account rows;
- every DASHBOARD_REFRESH_INTERVAL seconds by the periodic task "emailsys: dashboard refresh" (default pool), which
  first probes the slow parts — workers online (a Celery broadcast that waits its whole timeout), queue depths
  (broker calls), beat, heartbeat and SQS bridge — and stores them in Redis. The snapshot only reads that stored
  probe, so the hot path (a sending worker's coalescer) never waits on the broker; whatever changed without an
  activity (event-mailing sends, work-order progress, a resolved unknown send) reaches the page by this refresh.
  A probe older than a few intervals is shown as stale: then beat or the default pool is not working.

The fragments are the same for every watcher, so the group needs every permission a panel shows
(`DASHBOARD_PERMISSIONS`); the page renders only the panels its user may see, and opens the socket only for a user
who may see them all.
"""

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.db.models import DateTimeField, OuterRef, Sum
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.timezone import localtime

from campaigns.models import SenderAccount
from campaigns.selectors import _count_of, _per_time_zone, _send_ledgers, _sent_since, account_list, activity_list
from emailsys import clock
from emailsys.health import (
    HEARTBEAT_KEY,
    beat_tick_age,
    redis_timestamp_age,
    sqs_bridge_state,
    workers_by_pool,
)
from emailsys.live import (
    DASHBOARD_VERSION_SEQUENCE,
    SINGLETON_ID,
    LiveKind,
    live_changed,
    live_current,
    live_kind_register,
)
from emailsys.live_access import live_group_permissions
from emailsys.metrics import queue_depths
from emailsys.ops_clients import ops_redis
from workorders.models import WorkOrder, WorkOrderStep

logger = logging.getLogger(__name__)

DASHBOARD = "dashboard"
HEALTH_KEY = "emailsys:dashboard:health"
ACCOUNT_ROWS = 50
ACTIVITY_ROWS = 25
WORKORDER_ROWS = 20
# A work order in one of these states needs nothing and does nothing: every other one is shown as running.
IDLE_WORKORDER_STATES = (
    WorkOrder.Status.READY,
    WorkOrder.Status.COMPLETE,
    WorkOrder.Status.ERROR,
    WorkOrder.Status.INTERRUPTED,
)
# What each send ledger's app is called on the page (campaigns.selectors._send_ledgers).
LEDGER_LABELS = {"campaigns": "Campaigns", "workorders": "Event mailings"}


@dataclass(frozen=True)
class Panel:
    element_id: str
    template: str
    permissions: tuple[str, ...]  # every one needed to see it; () for any staff user (as /api/v1/health/)


SEND_LEDGERS_VIEW = ("campaigns.view_sendrecord", "workorders.view_mailingsend")
PANELS: tuple[Panel, ...] = (
    Panel("dashboard-sends", "live/dashboard_sends.html", SEND_LEDGERS_VIEW),
    Panel("dashboard-unknown", "live/dashboard_unknown.html", SEND_LEDGERS_VIEW),
    Panel("dashboard-system", "live/dashboard_system.html", ()),
    Panel(
        "dashboard-inbound",
        "live/dashboard_inbound.html",
        ("processing.view_emailresult", "processing.view_inboundemail"),
    ),
    Panel("dashboard-workorders", "live/dashboard_workorders.html", ("workorders.view_workorder",)),
    Panel("dashboard-accounts", "live/dashboard_accounts.html", ("campaigns.view_senderaccount",)),
    Panel("dashboard-activity", "live/dashboard_activity.html", ("campaigns.view_activity", "campaigns.view_campaign")),
)
# What the `dashboard` live group must require (emailsys.live_access.LIVE_GROUP_KINDS): every panel's permissions.
DASHBOARD_PERMISSIONS: tuple[str, ...] = tuple(sorted({name for panel in PANELS for name in panel.permissions}))


# --- snapshot ----------------------------------------------------------------------------------------------------


def inbound_today() -> dict:
    from processing.selectors import inbound_today as today

    return today()


def dashboard_snapshot(object_id: int = SINGLETON_ID) -> dict:
    """The dashboard's state as JSON: reads of PostgreSQL (about ten queries, none depending on the number of rows
    shown) and the stored health probe (one Redis read; None when there is none or Redis is down)."""
    now = clock.now()
    accounts = list(account_list()[:ACCOUNT_ROWS])
    return {
        "at": now.isoformat(),
        "sends_today": _sends_today(now=now),
        "accounts": [
            {
                "id": account.id,
                "email": account.email,
                "status": account.status,
                "status_reason": account.status_reason,
                "sent_today": account.sent_today,
                "reserved_today": account.reserved_today,
                "daily_limit": account.daily_limit,
            }
            for account in accounts
        ],
        "accounts_total": len(accounts) if len(accounts) < ACCOUNT_ROWS else SenderAccount.objects.count(),
        "unknown": [
            {
                "ledger": ledger._meta.label_lower,
                "label": LEDGER_LABELS.get(ledger._meta.app_label, ledger._meta.label),
                "count": ledger.objects.filter(state=ledger.State.UNKNOWN).count(),
            }
            for ledger in _send_ledgers()
        ],  # fmt: skip
        "workorders": _running_workorders(),
        "activities": [
            {
                "id": activity.id,
                "at": activity.created_at.isoformat(),
                "kind": activity.kind,
                "kind_label": activity.get_kind_display(),
                "campaign_id": activity.campaign_id,
                "campaign": activity.campaign.name if activity.campaign else "",
                "message": activity.message,
            }
            for activity in activity_list().select_related("campaign")[:ACTIVITY_ROWS]
        ],
        "health": dashboard_health_stored(),
        # Inbound mail (issue #13): today's counts per class and the latest classified messages.
        "inbound": inbound_today(),
    }


def _sends_today(*, now: datetime) -> list[dict]:
    """Emails delivered since the local midnight of their sender account (the day its daily limit counts in), per
    send ledger: the same rule as account_list's `sent_today`, so the totals are the accounts' rows summed."""
    zones = SenderAccount.objects.order_by().values_list("time_zone", flat=True).distinct()
    day_start = _per_time_zone(zones, lambda zone: clock.local_day_start(time_zone=zone, at=now), DateTimeField())
    sends = []
    for ledger in _send_ledgers():
        sent = ledger.objects.filter(_sent_since(OuterRef("day_start")), account=OuterRef("pk")).values("account")
        total = SenderAccount.objects.annotate(day_start=day_start, sent=_count_of(sent)).aggregate(n=Sum("sent"))
        label = LEDGER_LABELS.get(ledger._meta.app_label, ledger._meta.verbose_name_plural)
        sends.append({"ledger": ledger._meta.label_lower, "label": label, "count": total["n"] or 0})
    return sends


def _running_workorders() -> list[dict]:
    orders = list(
        WorkOrder.objects.exclude(status__in=IDLE_WORKORDER_STATES).select_related("event").order_by("-updated_at")
    )[:WORKORDER_ROWS]
    steps: dict[int, list[WorkOrderStep]] = {}
    for step in WorkOrderStep.objects.filter(work_order__in=orders).order_by("order"):
        steps.setdefault(step.work_order_id, []).append(step)
    rows = []
    for order in orders:
        step = _current_step(steps.get(order.id, []))
        rows.append(
            {
                "id": order.id,
                "name": str(order),
                "status": order.status,
                "status_label": order.get_status_display(),
                "resume_at": order.resume_at.isoformat() if order.resume_at else None,
                "step": None
                if step is None
                else {
                    "name": step.get_name_display(),
                    "status": step.status,
                    "message": step.message,
                    "done": step.done,
                    "total": step.total,
                },  # fmt: skip
            }
        )
    return rows


def _current_step(steps: list[WorkOrderStep]) -> WorkOrderStep | None:
    """The step working or sleeping, else the last one that ran (a work order stopped between steps)."""
    for step in steps:
        if step.status in (WorkOrderStep.Status.WORKING, WorkOrderStep.Status.SLEEPING):
            return step
    ran = [step for step in steps if step.status != WorkOrderStep.Status.READY]
    return ran[-1] if ran else None


# --- the slow part: health, probed by the periodic task ------------------------------------------------------------


def dashboard_health_probe() -> dict:
    """Probes workers online per pool, queue depths, beat, heartbeat and the SQS bridge, concurrently (the worker
    broadcast waits its whole timeout, HEALTHZ_WORKER_TIMEOUT). A probe that fails is reported by its error."""
    probes: dict[str, Callable[[], object]] = {
        "workers": lambda: workers_by_pool(timeout=settings.HEALTHZ_WORKER_TIMEOUT),
        "queue_depths": queue_depths,
        "beat_tick_age_s": beat_tick_age,
        "heartbeat_age_s": lambda: redis_timestamp_age(HEARTBEAT_KEY),
        "sqs": _sqs_state,
    }
    health: dict = {"probed_at": time.time(), "errors": {}}
    with ThreadPoolExecutor(max_workers=len(probes), thread_name_prefix="dashboard-probe") as pool:
        futures = {name: pool.submit(probe) for name, probe in probes.items()}
        for name, future in futures.items():
            try:
                health[name] = future.result(timeout=10)
            except Exception as error:  # noqa: BLE001 - a failed probe is a verdict to show, not a crash
                health[name] = None
                health["errors"][name] = f"{type(error).__name__}: {error}"[:200]
    return health


def _sqs_state() -> dict:
    try:
        return sqs_bridge_state(now=clock.now())
    finally:
        connection.close()  # a probe thread's own connection


def dashboard_health_store(health: dict) -> None:
    ops_redis().set(HEALTH_KEY, json.dumps(health), ex=3600)


def dashboard_health_stored() -> dict | None:
    """The last stored probe; None when there is none (never probed, or Redis is unreachable: logged)."""
    try:
        raw = ops_redis().get(HEALTH_KEY)
    except Exception as error:  # noqa: BLE001 - the dashboard shows the health as unknown
        logger.warning("dashboard health unreadable: %s", type(error).__name__)
        return None
    return json.loads(raw) if raw else None


def dashboard_refresh() -> None:
    """The periodic task's service: probe, store, publish (every watcher gets fresh health and whatever changed
    without an activity)."""
    dashboard_health_store(dashboard_health_probe())
    live_changed(DASHBOARD, SINGLETON_ID)


# --- rendering ---------------------------------------------------------------------------------------------------


def dashboard_fragments(object_id: int, payload: dict) -> dict[str, str]:
    """Element id → HTML of every panel (the page renders the same ones, `dashboard_page`)."""
    context = _render_context(payload)
    return {panel.element_id: render_to_string(panel.template, context) for panel in PANELS}


def _render_context(payload: dict) -> dict:
    data = payload["data"]
    now = time.time()
    return {
        "key": payload["key"],
        "version": payload["version"],
        "data": data,
        "sends_total": sum(row["count"] for row in data["sends_today"]),
        "accounts_more": max(0, data["accounts_total"] - len(data["accounts"])),
        "unknown": [
            {**row, "url": reverse(f"admin:{row['ledger'].replace('.', '_')}_changelist") + "?state__exact=unknown"}
            for row in data["unknown"]
        ],
        "activities": [
            {**row, "time": localtime(datetime.fromisoformat(row["at"])).strftime("%H:%M:%S")}
            for row in data["activities"]
        ],
        "system": _system_view(data["health"], now=now),
        "activity_url": reverse("admin:campaigns_activity_changelist"),
        "accounts_url": reverse("admin:campaigns_senderaccount_changelist"),
        "workorders_url": reverse("admin:workorders_workorder_changelist"),
    }


def _system_view(health: dict | None, *, now: float) -> dict:
    """The probe as rows to show: each with a state (ok, warn, down, off, unknown) and a short text; ages are
    brought forward to now. A probe older than a few refresh intervals is stale: every row is then unknown."""
    interval = int(settings.DASHBOARD_REFRESH_INTERVAL)
    if health is None:
        return {"stale": True, "note": "No health probe yet (it runs on the default pool, scheduled by beat).",
                "pools": [], "rows": []}  # fmt: skip
    since = max(0.0, now - health["probed_at"])
    stale = since > 3 * interval + 5
    errors = health.get("errors", {})
    workers = health.get("workers") or {}
    depths = health.get("queue_depths") or {}
    pools = [
        {
            "name": pool,
            "workers": len(workers.get(pool, [])),
            "state": "unknown" if stale or "workers" in errors else ("ok" if workers.get(pool) else "down"),
            "depth": sum(depths.get(queue, 0) for queue in settings.WORKER_POOL_QUEUES[pool])
            if "queue_depths" not in errors
            else None,
        }
        for pool in settings.WORKER_POOLS
    ]
    rows = [
        _age_row(
            "Beat",
            health.get("beat_tick_age_s"),
            since,
            settings.HEALTHZ_BEAT_MAX_AGE,
            "tick",
            errors.get("beat_tick_age_s"),
            never="never ticked",
        ),  # fmt: skip
        _age_row(
            "Heartbeat",
            health.get("heartbeat_age_s"),
            since,
            3 * settings.HEARTBEAT_INTERVAL,
            "ran",
            errors.get("heartbeat_age_s"),
            never="never ran",
        ),  # fmt: skip
        _sqs_row(health.get("sqs"), errors.get("sqs")),
    ]
    if stale:
        rows = [{**row, "state": "unknown"} for row in rows]
    note = f"Probe {since:.0f} s old: is beat or the default pool down?" if stale else f"checked {since:.0f} s ago"
    return {"stale": stale, "note": note, "pools": pools, "rows": rows, "errors": errors}


def _age_row(label: str, age: float | None, since: float, limit: float, verb: str, error: str | None, *,
             never: str) -> dict:  # fmt: skip
    if error:
        return {"label": label, "state": "unknown", "text": error}
    if age is None:
        return {"label": label, "state": "down", "text": never}
    age += since
    return {"label": label, "state": "ok" if age <= limit else "down", "text": f"{verb} {_seconds(age)} ago"}


def _sqs_row(sqs: dict | None, error: str | None) -> dict:
    label = "SQS bridge"
    if error or sqs is None:
        return {"label": label, "state": "unknown", "text": error or "not probed"}
    if not sqs["configured"]:
        return {"label": label, "state": "off", "text": "not configured (events go straight to Celery)"}
    if sqs["waiting_s"] > settings.DASHBOARD_SQS_BEHIND_SECONDS:
        return {"label": label, "state": "down", "text": f"newest event waiting {_seconds(sqs['waiting_s'])}"}
    last = sqs["last_received_age_s"]
    text = "no message yet" if last is None else f"received {_seconds(last)} ago"
    return {"label": label, "state": "ok", "text": text}


def _seconds(value: float) -> str:
    value = int(value)
    if value < 120:
        return f"{value} s"
    if value < 7200:
        return f"{value // 60} min"
    return f"{value // 3600} h"


# --- the page ----------------------------------------------------------------------------------------------------


def dashboard_page(*, user) -> dict:
    """What the admin index shows `user`: the panels it may see (as they stand, the live version with them), and
    whether its socket opens — only for a user who may see every panel and join the group, so no live fragment
    ever shows more than the page did."""
    visible = [panel for panel in PANELS if user.has_perms(panel.permissions)]
    if not visible:
        return {"panels": [], "live": False}
    payload = live_current(DASHBOARD, SINGLETON_ID)
    context = _render_context(payload)
    group_permissions = set(live_group_permissions(DASHBOARD) or ()) | set(DASHBOARD_PERMISSIONS)
    return {
        "panels": [render_to_string(panel.template, context) for panel in visible],
        "live": len(visible) == len(PANELS) and user.has_perms(group_permissions),
        "socket": f"/ws/live/{DASHBOARD}/",
    }


def dashboard_live_register() -> None:
    live_kind_register(
        LiveKind(
            name=DASHBOARD,
            model=None,
            snapshot=dashboard_snapshot,
            render=dashboard_fragments,
            version_sequence=DASHBOARD_VERSION_SEQUENCE,
        )
    )
