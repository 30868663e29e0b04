"""live.js on a work order's page, message by message (no workers: the test publishes what the page gets): older
versions are dropped, an optimistic state is held against them and replaced by the real one, a refused press is
rolled back with its detail shown, a clean close is reconnected, and a session that ended stops it for good."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.sessions.models import Session
from playwright.sync_api import Page

from emailsys.live import live_current, live_publish_now
from emailsys.testing_browser import browser_page, chromium, live_site, session_cookies
from workorders.models import WorkOrder
from workorders.services.live import workorder_fragments
from workorders.services.state import workorder_steps_create
from workorders.tests.factories import WorkOrderFactory

pytestmark = pytest.mark.django_db(transaction=True)


def publish_as(work_order_id: int, *, version: int, status: str) -> None:
    """A message of `version` saying `status` (rendered by the real renderer), as a worker would publish it."""
    payload = live_current("workorder", work_order_id)
    payload = {
        **payload,
        "version": version,
        "data": {**payload["data"], "status": status, "status_label": status.capitalize()},
    }
    payload["fragments"] = workorder_fragments(work_order_id, payload)
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API keeps an event loop in this thread
        assert pool.submit(live_publish_now, group=f"workorder-{work_order_id}", payload=payload).result(10)


def badge_text(page: Page, work_order_id: int) -> str:
    return page.locator(f"#workorder-{work_order_id}-status").inner_text().strip()


def wait_state(page: Page, state: str) -> None:
    page.wait_for_function("(state) => document.body.dataset.liveState === state", arg=state)


@pytest.mark.timeout(180)
def test_versions_optimistic_holds_rollback_and_reconnects(static_root: Path, tmp_path: Path) -> None:
    work_order = WorkOrderFactory()
    workorder_steps_create(work_order=work_order)
    operator = get_user_model().objects.create_user("script-operator", is_staff=True)
    operator.groups.add(Group.objects.get(name="operator"))
    with live_site(static_root=static_root, log_dir=tmp_path, LIVE_SOCKET_RECHECK_SECONDS="1") as site:
        with chromium() as browser:
            page, problems = browser_page(browser, session_cookies(operator, site.url))
            page.goto(f"{site.url}/admin/workorders/workorder/{work_order.id}/change/", wait_until="load")
            page.evaluate("() => { window.__marker = 'no reload'; }")
            wait_state(page, "live")
            shown = WorkOrder.objects.get(id=work_order.id).live_version
            assert badge_text(page, work_order.id) == "Ready"

            publish_as(work_order.id, version=shown, status="error")  # as old as the page: dropped
            publish_as(work_order.id, version=shown + 1000, status="sleeping")  # newer: shown
            page.wait_for_function(f"() => window.emailsysLive.shown['workorder-{work_order.id}'] === {shown + 1000}")
            assert badge_text(page, work_order.id) == "Sleeping"
            assert page.locator(f"#workorder-{work_order.id}-status").get_attribute("data-live-v") == str(shown + 1000)
            publish_as(work_order.id, version=shown + 1, status="error")  # older than shown: dropped
            page.wait_for_timeout(300)
            assert badge_text(page, work_order.id) == "Sleeping"

            # Stop: "Stopping…" at once, then the real state (the fake "Sleeping" is gone) by the answer's version.
            WorkOrder.objects.filter(id=work_order.id).update(live_version=shown + 1000)
            page.get_by_role("button", name="Stop", exact=True).click()
            page.wait_for_function(f"() => window.emailsysLive.shown['workorder-{work_order.id}'] > {shown + 1000}")
            assert badge_text(page, work_order.id) == "Ready"
            assert "live-optimistic" not in page.locator(f"#workorder-{work_order.id}-status").get_attribute("class")

            # Start, then a refused second Start: "Starting…" at once, the detail shown, the badge as it was.
            page.get_by_role("button", name="Start", exact=True).click()
            page.wait_for_function(
                f"() => document.getElementById('workorder-{work_order.id}-status').textContent.trim() === 'Queued'"
            )
            queued_version = WorkOrder.objects.get(id=work_order.id).live_version
            publish_as(work_order.id, version=queued_version - 1, status="ready")  # a late, older message
            page.get_by_role("button", name="Start", exact=True).click()
            page.locator("[data-live-errors]:not([hidden])").wait_for()
            assert "already queued" in page.locator("[data-live-errors]").inner_text()
            assert badge_text(page, work_order.id) == "Queued"

            # A clean close (1000) is reconnected too; the snapshot on connect is the resync.
            page.evaluate("() => window.emailsysLive.connection.socket.close(1000)")
            wait_state(page, "reconnecting")
            assert page.locator(".live-state").inner_text() == "reconnecting…"
            wait_state(page, "live")

            # The session ends: the server closes with 4401 and the page stops trying.
            Session.objects.all().delete()
            wait_state(page, "ended")
            assert "log in again" in page.locator(".live-state").inner_text()
            page.wait_for_timeout(1500)
            assert page.evaluate("() => document.body.dataset.liveState") == "ended"
            assert page.evaluate("() => window.__marker") == "no reload"
            assert [e for e in problems.errors if "status of 409" not in e] == []
