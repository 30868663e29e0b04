"""Issue 12's work-order acceptance in a real browser: headless Chromium against daphne, real `workorders` pool
workers, the Redis channel layer and an SMTP server on loopback. Everything the pages show arrives over their
socket: a marker set on `window` before the first click must survive to the end (no reload, no navigation)."""

import time
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from playwright.sync_api import Page

from emailsys.testing import RecordingSmtpServer, port_answers, wait_until
from emailsys.testing_browser import browser_page, chromium, live_site, screenshot, session_cookies
from workorders.models import Contact, WorkOrder
from workorders.services.lifecycle import workorder_restart
from workorders.services.state import workorder_steps_create
from workorders.tests.factories import SegmentFactory, WorkOrderFactory

pytestmark = pytest.mark.django_db(transaction=True)
CONTACTS = 200
SMTP_DELAY = 0.03  # per email: Send takes several seconds, long enough to watch and to stop


def staff(username: str, *, role: str = "", permissions: tuple[str, ...] = ()):
    user = get_user_model().objects.create_user(username, is_staff=True)
    if role:
        user.groups.add(Group.objects.get(name=role))
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(content_type__app_label="workorders", codename=codename))
    return user


def open_live(page: Page, url: str) -> None:
    page.goto(url, wait_until="load")
    page.evaluate("() => { window.__marker = 'no reload'; }")
    page.wait_for_function("() => document.body.dataset.liveState === 'live'")


def badge(page: Page, work_order_id: int):
    return page.locator(f"#workorder-{work_order_id}-status")


def wait_badge(page: Page, work_order_id: int, text: str, timeout: float = 90) -> None:
    page.wait_for_function(
        "([id, text]) => { const b = document.getElementById(`workorder-${id}-status`); "
        "return b && b.textContent.trim() === text && !b.classList.contains('live-optimistic'); }",
        arg=[work_order_id, text],
        timeout=timeout * 1000,
    )


def send_progress(page: Page) -> int:
    value = page.locator("tr[data-step=send] progress").first
    return int(value.get_attribute("value") or 0) if value.count() else 0


def assert_no_reload(page: Page) -> None:
    assert page.evaluate("() => window.__marker") == "no reload"


def expected_noise(error: str) -> bool:
    """What Chromium logs by itself: a socket refused while daphne restarts, a button's refused POST (the page
    shows its detail)."""
    return "WebSocket connection to" in error or "status of 409" in error or "status of 403" in error


@pytest.mark.timeout(400)
def test_operators_drive_a_work_order_through_the_review_gate_live(static_root: Path, tmp_path: Path) -> None:
    segment = SegmentFactory()
    Contact.objects.bulk_create(
        [Contact(email=f"c{n}@example.test", name=f"Ann {n}", language="en") for n in range(CONTACTS)]
    )
    operator = staff("operator", role="operator")
    viewer = staff("viewer", role="viewer")
    runner = staff("runner", permissions=("view_workorder", "run_workorder"))
    with RecordingSmtpServer(data_delay=SMTP_DELAY) as smtp:
        first = WorkOrderFactory(audience=segment, account__smtp_port=smtp.port, testers=["t@example.test"],
                                 subjects={"en": ""})  # fmt: skip
        second = WorkOrderFactory(audience=segment, account=first.account, template=first.template, event=first.event,
                                  stage="reminder", auto_approve=True, subjects={"en": ""})  # fmt: skip
        for work_order in (first, second):
            workorder_steps_create(work_order=work_order)
        with live_site(static_root=static_root, log_dir=tmp_path, MEDIA_ROOT=str(tmp_path / "media")) as site:
            worker = site.start_worker("workorders")
            wait_until(lambda: " ready." in worker.log_path.read_text(errors="replace"), timeout=60,
                       what="worker ready")  # fmt: skip
            with chromium() as browser:
                page, problems = browser_page(browser, session_cookies(operator, site.url))
                watcher, watcher_problems = browser_page(browser, session_cookies(viewer, site.url))
                first_url = f"{site.url}/admin/workorders/workorder/{first.id}/change/"
                open_live(page, first_url)
                open_live(watcher, first_url)
                assert watcher.locator("[data-live-action]").count() == 0, "a viewer gets no buttons"
                page.evaluate(
                    "() => { window.__seen = []; document.addEventListener('live:update', (e) => "
                    "window.__seen.push(e.detail.data.steps.map((s) => s.status).join(','))); }"
                )

                # Start: the optimistic state at once, then each step, up to the review gate.
                page.get_by_role("button", name="Start", exact=True).click()
                wait_badge(page, first.id, "Awaiting approval")
                seen = page.evaluate("() => window.__seen")
                assert len(seen) >= 3 and any("working" in steps for steps in seen), seen
                assert page.locator("tr[data-step=test] .live-badge").inner_text() == "Complete"
                assert page.locator("tr[data-step=send] .live-badge").inner_text() == "Ready"
                wait_badge(watcher, first.id, "Awaiting approval")  # the viewer's page follows too
                screenshot(page, "workorder-awaiting-approval")
                # What to review before approving: the dry-run list and the prepared email open, the test email shown.
                for link in ("Dry-run list", "Prepared email: en"):
                    href = page.get_by_role("link", name=link).get_attribute("href")
                    assert page.request.get(site.url + href).status == 200, link
                assert "t@example.test" in page.locator(".live-tests").inner_text()

                # Approve needs its own permission: a user with run only is not offered it.
                runner_page, runner_problems = browser_page(browser, session_cookies(runner, site.url))
                open_live(runner_page, first_url)
                assert runner_page.get_by_role("button", name="Start", exact=True).count() == 1
                assert runner_page.get_by_role("button", name="Approve Send").count() == 0
                runner_page.close()

                # Approve: Send's bar moves (several values seen) and the work order completes, no reload.
                page.get_by_role("button", name="Approve Send").click()
                wait_badge(page, first.id, "Working")
                values = [send_progress(page)]
                deadline = time.monotonic() + 90
                while len(set(values)) < 3 and time.monotonic() < deadline:
                    page.wait_for_timeout(100)  # Playwright's own clock: lets the page's socket run meanwhile
                    values.append(send_progress(page))
                assert len(set(values)) >= 3 and values == sorted(values), values
                page.wait_for_function("() => document.querySelector('tr[data-step=send] progress').value >= 60")
                screenshot(page, "workorder-running")

                # A refused press (Start while it runs): the detail is shown and the badge rolled back.
                page.get_by_role("button", name="Start", exact=True).click()
                page.locator("[data-live-errors]:not([hidden])").wait_for()
                assert "already" in page.locator("[data-live-errors]").inner_text()
                assert not badge(page, first.id).evaluate("b => b.classList.contains('live-optimistic')")
                assert badge(page, first.id).inner_text() in ("Working", "Complete")

                wait_badge(page, first.id, "Complete")
                wait_badge(watcher, first.id, "Complete")
                assert page.locator("tr[data-step=send] .live-figure").inner_text() == f"{CONTACTS} / {CONTACTS}"
                assert_no_reload(page)
                assert_no_reload(watcher)

                # A second run (auto-approved): Stop in the middle of Send shows Interrupted within 2 s.
                second_url = f"{site.url}/admin/workorders/workorder/{second.id}/change/"
                open_live(page, second_url)
                watcher.goto(f"{site.url}/admin/workorders/workorder/", wait_until="load")
                watcher.wait_for_function("() => document.body.dataset.liveState === 'live'")
                page.get_by_role("button", name="Start", exact=True).click()
                page.wait_for_function("() => { const p = document.querySelector('tr[data-step=send] progress'); "
                                       "return p && Number(p.value) >= 20; }", timeout=90_000)  # fmt: skip
                watcher.wait_for_function(
                    f"() => document.getElementById('workorder-{second.id}-status').textContent.trim() === 'Working'"
                )
                screenshot(watcher, "workorder-list")
                page.get_by_role("button", name="Stop", exact=True).click()
                pressed = time.monotonic()
                wait_badge(page, second.id, "Interrupted", timeout=10)
                stop_seconds = time.monotonic() - pressed
                print(f"Stop → Interrupted shown after {stop_seconds:.2f} s")
                assert stop_seconds < 2.0
                assert 0 < send_progress(page) < CONTACTS

                # The server goes away: "reconnecting…", the state changes meanwhile, the page catches up.
                site.daphne.kill()
                wait_until(lambda: not port_answers(site.port), timeout=10, what="daphne gone")
                page.wait_for_function("() => document.body.dataset.liveState === 'reconnecting'")
                assert "reconnecting" in page.locator(".live-state").inner_text()
                workorder_restart(work_order_id=second.id, step="send")  # published while no socket listens
                site.start_daphne()
                page.wait_for_function("() => document.body.dataset.liveState === 'live'", timeout=60_000)
                wait_badge(page, second.id, "Complete")
                version = WorkOrder.objects.get(id=second.id).live_version
                page.wait_for_function(f"() => window.emailsysLive.shown['workorder-{second.id}'] >= {version}")
                assert page.locator("tr[data-step=send] .live-figure").inner_text() == f"{CONTACTS} / {CONTACTS}"
                assert_no_reload(page)

                for errors in (problems.errors, watcher_problems.errors, runner_problems.errors):
                    assert [e for e in errors if not expected_noise(e)] == []
    assert WorkOrder.objects.get(id=first.id).status == WorkOrder.Status.COMPLETE
