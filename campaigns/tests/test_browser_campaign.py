"""The campaign and sender-account pages while a campaign really sends: daphne, a `sending` pool worker, the
dispatcher's task run by the test (it enqueues the batches on the broker) and an SMTP server on loopback. In
Chromium the counts move without a reload and end at what the SMTP server received; a plain WebSocket client
shows that hundreds of sends make a handful of live messages (coalesced progress), the last with the final
count."""

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import websockets
from django.db import connection

from campaigns.models import Campaign, SendRecord
from campaigns.tasks import dispatch_due_task
from campaigns.tests.scenarios import campaign_scenario
from emailsys.testing import RecordingSmtpServer, wait_until
from emailsys.testing_browser import LiveSite, browser_page, chromium, live_site, screenshot, session_cookies

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def site(django_db_setup, django_db_blocker, static_root: Path, tmp_path_factory) -> Iterator[LiveSite]:
    """daphne and one sending worker for the module; each test brings its own campaign."""
    with django_db_blocker.unblock(), live_site(static_root=static_root, log_dir=tmp_path_factory.mktemp("logs")) as s:
        s.start_worker("sending", concurrency=2)
        yield s


def dispatch_in_thread() -> None:
    """The dispatcher's task as beat would run it (claims the due leads, enqueues their batches): off the test's
    thread, where Playwright keeps an event loop."""

    def run() -> None:
        try:
            dispatch_due_task()
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(run).result(timeout=30)


# Every applied live message, as the page shows it afterwards (live.js dispatches `live:update` after the swap).
RECORD_UPDATES = """(selectors) => {
    window.__seen = [];
    window.__notReloaded = true;
    document.addEventListener("live:update", () => {
        const text = (selector) => (document.querySelector(selector) || {}).textContent;
        window.__seen.push(Object.fromEntries(Object.entries(selectors).map(([name, s]) => [name, text(s)])));
    });
}"""


def distinct_increasing(values: list[int]) -> list[int]:
    """The values a counter showed, each new one larger than the last."""
    shown: list[int] = []
    for value in values:
        if not shown or value > shown[-1]:
            shown.append(value)
    return shown


@pytest.mark.timeout(240)
def test_the_campaign_and_account_pages_count_up_while_the_campaign_sends(site, django_user_model) -> None:
    admin = django_user_model.objects.create_superuser("live-admin", "admin@example.com", "x")
    with RecordingSmtpServer(data_delay=0.1) as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, accounts=2, daily_limit=500, leads=60, recipients_per_lead=1,
                                     steps=1, batch_size=10, name="Live spring campaign")  # fmt: skip
        campaign, account = scenario.campaign, scenario.accounts[0]
        with chromium() as browser:
            cookies = session_cookies(admin, site.url)
            campaign_page, campaign_problems = browser_page(browser, cookies)
            account_page, account_problems = browser_page(browser, cookies)
            campaign_page.goto(f"{site.url}/admin/campaigns/campaign/{campaign.pk}/change/")
            account_page.goto(f"{site.url}/admin/campaigns/senderaccount/{account.pk}/change/")
            for page in (campaign_page, account_page):
                page.wait_for_function("() => document.body.getAttribute('data-live-state') === 'live'")
            key = f"campaign-{campaign.pk}"
            campaign_page.evaluate(RECORD_UPDATES, {"sent": f"#{key}-panel tbody .cl-col-sent",
                                                    "status": f"#{key}-status"})  # fmt: skip
            panel = f"#account-{account.pk}-panel"
            account_page.evaluate(RECORD_UPDATES, {"reserved": f"{panel} .cl-usage-head .live-figure",
                                                   "sent": f"{panel} .cl-sent-today"})  # fmt: skip
            assert campaign_page.locator(f"#{key}-status").inner_text() == "Active"

            dispatch_in_thread()
            wait_until(lambda: len(smtp.snapshot()) >= 60, timeout=120, interval=0.2, what="60 messages accepted")
            campaign_page.wait_for_function(
                "(key) => document.querySelector(`#${key}-status`).textContent === 'Completed'", arg=key
            )
            sent_by_account = sum(1 for mail in smtp.snapshot() if mail.mail_from == account.email)
            account_page.wait_for_function(  # its final count: the last batch's sends reach the page too
                "([id, n]) => document.querySelector(`#account-${id}-panel .cl-sent-today`).textContent === String(n)",
                arg=[account.pk, sent_by_account],
            )
            campaign_seen = campaign_page.evaluate("window.__seen")
            account_seen = account_page.evaluate("window.__seen")
            assert campaign_page.evaluate("window.__notReloaded") and account_page.evaluate("window.__notReloaded")
            final_sent = int(campaign_page.locator(f"#{key}-panel tbody .cl-col-sent").inner_text())
            screenshot(campaign_page, "campaign")
            screenshot(account_page, "account")
            assert campaign_problems.errors == [] and account_problems.errors == []

    sent_counts = distinct_increasing([int(seen["sent"]) for seen in campaign_seen])
    assert len([n for n in sent_counts if 0 < n < 60]) >= 2, f"the sent count moved only through {sent_counts}"
    assert final_sent == 60 == SendRecord.objects.filter(campaign=campaign, state="sent").count()
    reserved = distinct_increasing([int(seen["reserved"]) for seen in account_seen])
    assert len([n for n in reserved if n > 0]) >= 2 and reserved[-1] == sent_by_account, reserved
    assert int(account_seen[-1]["sent"]) == sent_by_account
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.COMPLETED


async def count_messages(url: str, cookie: str, origin: str, *, until_sent: int, timeout: float) -> list[dict]:
    """Every update on the socket until one shows `until_sent` emails sent (and a second more: nothing later)."""
    updates: list[dict] = []
    async with websockets.connect(url, additional_headers={"Cookie": cookie, "Origin": origin}) as socket:
        assert json.loads(await asyncio.wait_for(socket.recv(), timeout=10))["type"] == "subscribed"
        deadline = time.monotonic() + timeout
        done_at = None
        while time.monotonic() < (done_at or deadline):
            try:
                message = json.loads(await asyncio.wait_for(socket.recv(), timeout=0.5))
            except TimeoutError:
                continue
            updates.append(message["payload"])
            if done_at is None and message["payload"]["data"]["totals"]["sent"] >= until_sent:
                done_at = time.monotonic() + 1.0
    return updates


@pytest.mark.timeout(240)
def test_two_hundred_sends_make_a_few_live_messages_and_the_last_shows_them_all(site, django_user_model) -> None:
    admin = django_user_model.objects.create_superuser("live-counter", "admin@example.com", "x")
    cookie = "sessionid=" + session_cookies(admin, site.url)[0]["value"]
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, accounts=4, daily_limit=1000, leads=200,
                                     recipients_per_lead=1, steps=1, batch_size=25, name="Coalesced")  # fmt: skip
        group = f"campaign-{scenario.campaign.pk}"
        url = f"{site.url.replace('http', 'ws')}/ws/live/{group}/"

        async def scenario_run() -> list[dict]:
            listening = asyncio.create_task(count_messages(url, cookie, site.url, until_sent=200, timeout=120))
            await asyncio.sleep(0.5)  # subscribed before the first send: a head start, not a wait for an outcome
            await asyncio.to_thread(dispatch_in_thread)
            return await listening

        updates = asyncio.run(scenario_run())
        received = len(smtp.snapshot())

    assert received == 200
    versions = [update["version"] for update in updates]
    assert versions == sorted(versions), "versions only grow"
    progress = [update for update in updates if 0 < update["data"]["totals"]["sent"] < 200]
    assert len(updates) <= 200 / 10, f"{len(updates)} messages for 200 sends"
    assert progress, "no message while it sent"
    assert updates[-1]["data"]["totals"]["sent"] == 200 and updates[-1]["data"]["status"] == "completed"
