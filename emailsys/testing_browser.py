"""Browser tests of live pages: headless Chromium (Debian's, driven by Playwright) against daphne serving the
shipped settings, collected static files and the Redis channel layer, with real Celery workers where a page shows
work being done. Used by the browser tests of every app (fixtures in conftest.py).

Playwright's sync API keeps an event loop running in the test's thread, where Django then refuses ORM calls
(SynchronousOnlyOperation): `chromium()` allows them for the test process while the browser runs
(DJANGO_ALLOW_ASYNC_UNSAFE), never for the served processes, whose environment is made before.
"""

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from django.db import connections
from django.test import Client
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from emailsys.testing import (
    BASE_DIR,
    BIN_DIR,
    ManagedProcess,
    daphne_argv,
    free_port,
    port_answers,
    process_env,
    start_process,
    wait_until,
    worker_argv,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip
SCREENSHOT_DIR = BASE_DIR / "var" / "screenshots"


def collectstatic_into(root: Path) -> Path:
    """collectstatic as a deployment runs it (the Dockerfile)."""
    subprocess.run(
        [str(BIN_DIR / "python"), "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=BASE_DIR, env={**os.environ, "DJANGO_SETTINGS_MODULE": "emailsys.settings.test", "STATIC_ROOT": str(root)},
        check=True, timeout=120,
    )  # fmt: skip
    return root


@dataclass
class LiveSite:
    """daphne (and optionally workers) on the test database; `url` is the site's base URL."""

    env: dict[str, str]
    log_dir: Path
    port: int = field(default_factory=free_port)
    processes: list[ManagedProcess] = field(default_factory=list)
    daphne: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_daphne(self) -> ManagedProcess:
        self.daphne = self._start("daphne", daphne_argv(self.port))
        wait_until(lambda: port_answers(self.port) or not self.daphne.alive, timeout=30, what="daphne listening")
        assert self.daphne.alive, self.daphne.log()
        return self.daphne

    def restart_daphne(self) -> None:
        """Kills the server (every socket drops without a close frame) and starts it again on the same port."""
        assert self.daphne is not None
        self.daphne.kill()
        wait_until(lambda: not port_answers(self.port), timeout=10, what="daphne gone")
        self.start_daphne()

    def start_worker(self, pool: str, *, concurrency: int = 2, **env: str) -> ManagedProcess:
        name = f"{pool}-{len(self.processes)}"
        return self._start(name, worker_argv(pool, node_name=f"{name}@browser-{self.port}", concurrency=concurrency),
                           **env)  # fmt: skip

    def _start(self, name: str, argv: list[str], **env: str) -> ManagedProcess:
        process = start_process(name, argv, env={**self.env, **env}, log_dir=self.log_dir)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def logs(self) -> str:
        return "\n".join(f"===== {p.name} =====\n{p.log()}" for p in self.processes)


@contextmanager
def live_site(*, static_root: Path, log_dir: Path, **env: str) -> Iterator[LiveSite]:
    """Call with the database unblocked (process_env reads the test database's name)."""
    environment = process_env(STATIC_ROOT=str(static_root), **env)
    environment.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    site = LiveSite(env=environment, log_dir=log_dir)
    try:
        site.start_daphne()
        yield site
    finally:
        site.stop()
        print(f"\n{site.logs()}")


def session_cookies(user, url: str) -> list[dict]:
    client = Client()
    client.force_login(user)
    return [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": url}]


@dataclass
class BrowserProblems:
    """Console errors and uncaught exceptions of the page (a CSP refusal is logged as a console error too)."""

    errors: list[str] = field(default_factory=list)


@contextmanager
def chromium() -> Iterator[Browser]:
    before = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield browser
            finally:
                # ORM calls made meanwhile had connections of their own (Django keys them by async context too):
                # closed here, where they are visible, so the test database can be dropped.
                connections.close_all()
                browser.close()
    finally:
        if before is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = before


def browser_page(browser: Browser, cookies: list[dict]) -> tuple[Page, BrowserProblems]:
    """A new page with `cookies` (a logged-in session), recording console errors."""
    problems = BrowserProblems()
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_cookies(cookies)
    page = context.new_page()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            problems.errors.append(f"{message.text} ({message.location.get('url')})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.errors.append(f"uncaught: {error}"))
    page.set_default_timeout(30_000)
    return page, problems


def screenshot(page: Page, name: str) -> Path:
    """Writes var/screenshots/<name>.png (not committed: look at it)."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
