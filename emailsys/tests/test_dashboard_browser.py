"""The dashboard in a real browser: daphne, beat, a default and a sending worker, an SMTP server on loopback. The
page opens live, shows the probed health within seconds, and — without a reload — its activity stream grows and
its sends-today figure moves while a campaign, activated through its service, sends."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection

from campaigns.models import Campaign, SendRecord
from campaigns.services.lifecycle import campaign_set_status
from campaigns.tests.factories import SendRecordFactory
from campaigns.tests.scenarios import campaign_scenario
from emailsys import clock
from emailsys.dashboard import HEALTH_KEY
from emailsys.ops_clients import ops_redis
from emailsys.testing import RecordingSmtpServer, beat_argv, start_process, wait_until
from emailsys.testing_browser import browser_page, chromium, live_site, screenshot, session_cookies
from workorders.models import WorkOrder, WorkOrderStep
from workorders.services.state import workorder_steps_create
from workorders.tests.factories import WorkOrderFactory

pytestmark = pytest.mark.django_db(transaction=True)

LEADS = 4
SENDS_FIGURE = '[data-dash-figure="sends-campaigns.sendrecord"]'
ACTIVITY_ITEMS = "#dashboard-activity [data-dash-activity]"


def running_work_order() -> WorkOrder:
    """A work order sending (its progress shows on the dashboard); its lease is long, so the sweeper leaves it."""
    now = clock.now()
    work_order = WorkOrderFactory(status=WorkOrder.Status.WORKING, stage="invitation", lock_owner="elsewhere",
                                  lock_acquired_at=now, lock_expires_at=now + timedelta(hours=1))  # fmt: skip
    steps = workorder_steps_create(work_order=work_order)
    for step in steps[:-1]:
        WorkOrderStep.objects.filter(id=step.id).update(
            status=WorkOrderStep.Status.COMPLETE, done=40, total=40, started_at=now, ended_at=now
        )
    WorkOrderStep.objects.filter(id=steps[-1].id).update(
        status=WorkOrderStep.Status.WORKING, done=17, total=40, message="sending: 17 of 40", started_at=now
    )
    return work_order


@pytest.mark.timeout(300)
def test_the_dashboard_streams_activities_and_sends_without_reload(
    static_root: Path, tmp_path: Path, django_user_model
) -> None:
    admin = django_user_model.objects.create_superuser("dash-admin", "admin@example.com", "x")
    ops_redis().delete(HEALTH_KEY)  # a probe of an earlier run's processes
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, accounts=2, daily_limit=20, leads=LEADS,
                                     recipients_per_lead=1, steps=1, name="Spring launch")  # fmt: skip
        Campaign.objects.filter(id=scenario.campaign.id).update(status=Campaign.Status.DRAFT)
        running_work_order()
        SendRecordFactory(state=SendRecord.State.UNKNOWN, campaign__name="Autumn follow-up")

        with live_site(static_root=static_root, log_dir=tmp_path / "logs") as site:
            site.start_worker("default")
            site.start_worker("sending", concurrency=4)
            site.processes.append(start_process("beat", beat_argv(tmp_path), env=site.env, log_dir=site.log_dir))

            with chromium() as browser:
                page, problems = browser_page(browser, session_cookies(admin, site.url))
                page.goto(f"{site.url}/admin/")
                page.wait_for_function("() => document.body.getAttribute('data-live-state') === 'live'")
                page.evaluate("() => { window.__sameDocument = true; }")
                assert page.locator(SENDS_FIGURE).inner_text() == "0"
                assert page.locator(ACTIVITY_ITEMS).count() == 0

                # Health comes from the periodic refresh (beat → default pool), within seconds.
                page.wait_for_function(
                    "() => ['default', 'sending'].every((pool) =>"
                    ' document.querySelector(`[data-dash-pool="${pool}"] .dash-ok`))',
                    timeout=60_000,
                )
                assert page.locator('[data-dash-figure="workers-default"]').inner_text() == "1"
                assert page.locator('[data-dash-pool="workorders"] .dash-down').count() == 1
                page.wait_for_function("() => document.querySelector('[data-dash-check=\"beat\"] .dash-ok')")

                campaign_set_status(campaign=scenario.campaign, status=Campaign.Status.ACTIVE)
                page.wait_for_function(
                    "() => [...document.querySelectorAll('#dashboard-activity [data-dash-activity]')]"
                    ".some((item) => item.textContent.includes('Status changed'))",
                    timeout=20_000,
                )
                # The dispatcher (beat, every few seconds) hands the leads to the sending pool; each send is an
                # activity and counts today.
                page.wait_for_function(
                    f"() => document.querySelector('{SENDS_FIGURE}').textContent.trim() === '{LEADS}'",
                    timeout=90_000,
                )
                page.wait_for_function(
                    f"() => document.querySelectorAll('{ACTIVITY_ITEMS}').length >= {LEADS + 1}", timeout=20_000
                )
                assert page.evaluate("() => window.__sameDocument") is True  # no reload happened
                assert len(smtp.snapshot()) == LEADS
                assert page.locator("#dashboard-unknown .dash-attention").count() == 1
                assert page.locator("#dashboard-workorders progress").count() == 1
                screenshot(page, "dashboard")
                assert problems.errors == []
                # While Playwright runs, the ORM of this test has a connection of its own (another context of
                # asgiref's Local): closed here, or it would keep the test database from being dropped.
                connection.close()
    # The served processes' sessions end with them (the test database is dropped after the last test).
    wait_until(lambda: other_sessions() == 0, timeout=10, what="the served processes' database sessions gone")


def other_sessions() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]
