"""The Content-Security-Policy as a browser enforces it: headless Chromium (Playwright) against daphne serving the
shipped settings and collected static files. Every page must render with no CSP violation and no console error."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest
from django.test import Client
from playwright.sync_api import ConsoleMessage, Page, sync_playwright

from campaigns.tests.factories import ActivityFactory, CampaignFactory, LeadFactory, RecipientFactory
from emailsys.live import live_publish_now
from emailsys.mail_capture import captured_mail_store
from emailsys.testing import (
    daphne_argv,
    free_port,
    port_answers,
    process_env,
    start_process,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip


@dataclass
class Site:
    url: str
    capture_dir: Path


@pytest.fixture(scope="module")
def site(django_db_setup, django_db_blocker, static_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Site:
    """One daphne for the module (it reads the test database, which each test fills and flushes)."""
    capture_dir = tmp_path_factory.mktemp("captured")
    port = free_port()
    with django_db_blocker.unblock():
        env = process_env(STATIC_ROOT=str(static_root), MAIL_CAPTURE_DIR=str(capture_dir))
    daphne = start_process("daphne", daphne_argv(port), env=env, log_dir=tmp_path_factory.mktemp("logs"))
    try:
        wait_until(lambda: port_answers(port) or not daphne.alive, timeout=30, what="daphne listening")
        assert daphne.alive, daphne.log()
        yield Site(f"http://127.0.0.1:{port}", capture_dir)
    finally:
        daphne.stop()


@pytest.fixture
def admin_cookies(site: Site, django_user_model) -> list[dict]:
    admin = django_user_model.objects.create_superuser("csp-admin", "admin@example.com", "x")
    client = Client()
    client.force_login(admin)
    return [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": site.url}]


@dataclass
class BrowserProblems:
    """CSP violations (seen by the page's own listener) and console errors or uncaught exceptions (any frame)."""

    violations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


# Chromium logs every CSP refusal to the console too, so console errors cover frames the listener is not in.
VIOLATION_LISTENER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} (${where})`);
});
"""


@pytest.fixture
def browser_page(admin_cookies: list[dict]) -> Iterator[tuple[Page, BrowserProblems]]:
    """A logged-in admin's page. The ORM is not used while Playwright runs (its sync API keeps an event loop)."""
    problems = BrowserProblems()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context()
        context.add_cookies(admin_cookies)
        context.add_init_script(VIOLATION_LISTENER)
        page = context.new_page()

        def on_console(message: ConsoleMessage) -> None:
            # The browser asks every site for /favicon.ico; the admin has none.
            if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
                problems.errors.append(f"{message.text} ({message.location.get('url')})")

        page.on("console", on_console)
        page.on("pageerror", lambda error: problems.errors.append(f"uncaught: {error}"))
        page.set_default_timeout(60_000)  # generous: a busy CI machine renders the admin slowly
        try:
            yield page, problems
        finally:
            browser.close()


def visit(page: Page, problems: BrowserProblems, url: str) -> None:
    response = page.goto(url, wait_until="load")
    assert response is not None and response.status == 200, (url, response and response.status)
    assert "default-src 'self'" in response.headers["content-security-policy"]


def assert_clean(page: Page, problems: BrowserProblems, *, refused_on_purpose: str = "") -> None:
    """No violation and no console error; `refused_on_purpose` names the one resource a page may try and that the
    policy refuses by design (it then shows up in both lists)."""
    problems.violations.extend(page.evaluate("window.__cspViolations"))
    violations = [v for v in problems.violations if not (refused_on_purpose and refused_on_purpose in v)]
    errors = [e for e in problems.errors if not (refused_on_purpose and refused_on_purpose in e)]
    assert violations == [], violations
    assert errors == [], errors


def test_admin_index_changelist_and_change_form_work_under_the_policy(site, browser_page) -> None:
    page, problems = browser_page
    visit(page, problems, f"{site.url}/admin/")
    assert page.locator("#content-main").get_by_role("link", name="Campaigns").first.is_visible()
    assert page.locator("#operations-module").is_visible()
    assert_clean(page, problems)

    visit(page, problems, f"{site.url}/admin/auth/user/")
    # actions.js runs: ticking "select all" selects the row and updates the counter.
    page.locator("#action-toggle").check()
    assert page.locator("input.action-select").first.is_checked()
    assert page.locator(".action-counter").inner_text().startswith("1 of 1")
    assert_clean(page, problems)

    visit(page, problems, f"{site.url}/admin/auth/user/add/")
    page.locator("#id_username").fill("someone")
    assert page.locator("input[name=_save]").is_visible()
    assert_clean(page, problems)


@dataclass
class CampaignRows:
    campaign_id: int
    unsubscribe_token: str
    activity_id: int


@pytest.fixture
def campaign_rows(db) -> CampaignRows:
    campaign = CampaignFactory(name="CSP campaign")
    recipient = RecipientFactory(lead=LeadFactory(campaign=campaign))
    activity = ActivityFactory(campaign=campaign, message="sent", detail={"attempt": 1})
    return CampaignRows(campaign.pk, str(recipient.unsubscribe_token), activity.pk)


def test_a_campaign_change_form_and_its_changelist_render_under_the_policy(campaign_rows, site, browser_page) -> None:
    page, problems = browser_page
    visit(page, problems, f"{site.url}/admin/campaigns/campaign/")
    assert page.get_by_role("link", name="CSP campaign").is_visible()
    assert_clean(page, problems)

    visit(page, problems, f"{site.url}/admin/campaigns/campaign/{campaign_rows.campaign_id}/change/")
    assert page.locator("#campaign_form").is_visible()
    assert_clean(page, problems)

    # A read-only field shown preformatted: its look comes from the style sheet, not a style attribute.
    visit(page, problems, f"{site.url}/admin/campaigns/activity/{campaign_rows.activity_id}/change/")
    detail = page.locator("pre.preformatted")
    assert '"attempt": 1' in detail.inner_text()
    assert detail.evaluate("element => getComputedStyle(element).whiteSpace") == "pre-wrap"
    assert_clean(page, problems)


def test_swagger_ui_shows_the_operations_under_the_policy(site, browser_page) -> None:
    page, problems = browser_page
    visit(page, problems, f"{site.url}/api/docs/")
    page.locator(".opblock").first.wait_for()
    assert page.locator(".opblock").count() > 20
    assert page.locator(".opblock-summary-path", has_text="/api/v1/campaigns/").first.is_visible()
    assert_clean(page, problems)


def test_redoc_shows_the_operations_under_the_policy(site, browser_page) -> None:
    page, problems = browser_page
    visit(page, problems, f"{site.url}/api/redoc/")
    page.locator("h1", has_text="emailsys API").wait_for()
    page.locator("h2").first.wait_for()
    assert page.locator("h2").count() > 20
    # Redoc's bundle always shows Redocly's logo from their CDN; the policy refuses it (no third-party requests
    # from our pages) and Redoc then leaves the logo out.
    assert_clean(page, problems, refused_on_purpose="https://cdn.redoc.ly/redoc/logo-mini.svg")


def test_captured_mail_shows_an_html_email_with_its_styles_and_no_scripts(site, browser_page) -> None:
    page, problems = browser_page
    message = EmailMessage()
    message["Subject"] = "Styled"
    message["From"] = "a@example.com"
    message["To"] = "b@example.com"
    message.set_content("plain")
    message.add_alternative(
        '<html><head><style>p { color: rgb(200, 0, 0); }</style></head><body><p id="styled">Hello</p></body></html>',
        subtype="html",
    )
    stored = captured_mail_store(
        directory=site.capture_dir, mail_from="a@example.com", rcpt_tos=["b@example.com"], content=message.as_bytes()
    )
    visit(page, problems, f"{site.url}/captured/")
    assert page.get_by_role("link", name="Styled").is_visible()
    visit(page, problems, f"{site.url}/captured/{stored.name}")
    body = page.frame_locator("iframe.captured-html").locator("#styled")
    assert body.evaluate("element => getComputedStyle(element).color") == "rgb(200, 0, 0)"
    assert page.locator("iframe.captured-html").evaluate("frame => getComputedStyle(frame).height") == "480px"
    assert_clean(page, problems)


@pytest.mark.parametrize("page_path", ["/u/{token}/", "/w/u/test/en/"])
def test_public_pages_render_with_their_style_sheet(campaign_rows, site, browser_page, page_path: str) -> None:
    page, problems = browser_page
    visit(page, problems, site.url + page_path.format(token=campaign_rows.unsubscribe_token))
    # pages.css applies (the style attribute these pages had would have been refused).
    assert page.locator("body").evaluate("element => getComputedStyle(element).maxWidth") == "512px"
    assert page.get_by_role("heading", level=1).is_visible()
    assert_clean(page, problems)


def test_a_page_of_the_site_receives_live_updates_over_its_websocket(site, browser_page) -> None:
    page, problems = browser_page
    visit(page, problems, f"{site.url}/admin/")
    page.evaluate(
        """() => {
        window.__live = [];
        const socket = new WebSocket(`ws://${location.host}/ws/live/dashboard/`);
        socket.onmessage = (event) => window.__live.push(JSON.parse(event.data));
    }"""
    )
    page.wait_for_function("() => window.__live.length > 0")  # a function: an expression would need eval
    # Another thread: Playwright's sync API keeps an event loop in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(live_publish_now, group="dashboard", payload={"version": 1, "state": "csp"}).result(timeout=10)
    page.wait_for_function("() => window.__live.some((message) => message.payload && message.payload.state)")
    received = page.evaluate("window.__live")
    assert received[0] == {"type": "subscribed", "group": "dashboard"}
    # The dashboard's own snapshot (sent on connect) comes first; then what was published.
    assert received[-1] == {"type": "update", "group": "dashboard", "payload": {"version": 1, "state": "csp"}}
    assert_clean(page, problems)
