"""The README's "First campaign in five minutes", followed literally in Chromium on a fresh database with what
`make demo` runs: daphne, beat, a default and a sending pool, the SMTP capture (`manage.py smtp_capture`) and the
demo's admin and data. Every label the test clicks or fills, and every value it types, is read from the README's
walkthrough in order (`Walkthrough.says`): a step changed there fails here until the test does it too. The only
value that differs is the capture's port (a free one, not 1025).

Also: the README's campaign YAML example imports as written against the demo's data (`import_campaign`)."""

import re
import sys
import textwrap
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from playwright.sync_api import Locator, Page

from campaigns import demo as campaigns_demo
from campaigns.models import Campaign, SendRecord
from emailsys.services import admin_ensure
from emailsys.testing import BASE_DIR, beat_argv, free_port, port_answers, start_process, wait_until
from emailsys.testing_browser import browser_page, chromium, live_site, screenshot

pytestmark = pytest.mark.django_db(transaction=True)

README = BASE_DIR / "README.md"
TITLE = "## First campaign in five minutes"


def readme_section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n{title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def fenced_block(text: str, language: str) -> str:
    match = re.search(rf"^( *)```{language}\n(.*?)^\1```", text, re.MULTILINE | re.DOTALL)
    assert match, f"no ```{language} block"
    return textwrap.dedent(match.group(2))


class Walkthrough:
    """The walkthrough as one line of prose (line breaks are only wrapping), read from a cursor: `says` finds the
    next fragment after the previous one."""

    def __init__(self) -> None:
        self.section = readme_section(TITLE)
        self.text = " ".join(self.section.split())
        self.cursor = 0
        self.steps_done: list[int] = []
        self.started = time.monotonic()

    def says(self, fragment: str) -> str:
        found = self.text.find(fragment, self.cursor)
        assert found != -1, (
            f"the README walkthrough does not say {fragment!r} after …{self.text[self.cursor - 80 :][:80]}"
        )
        self.cursor = found + len(fragment)
        return fragment

    def step(self, number: int, title: str) -> None:
        self.says(f"{number}. **{title}**")
        self.steps_done.append(number)
        print(f"walkthrough step {number} at {time.monotonic() - self.started:.1f} s")  # shown when the test fails

    def value(self, label: str) -> str:
        """The value the README gives a label next: **Label** `value`."""
        match = re.compile(rf"\*\*{re.escape(label)}\*\* `([^`]*)`").search(self.text, self.cursor)
        assert match, f"the README walkthrough gives no value for {label!r} after its cursor"
        self.cursor = match.end()
        return match.group(1)

    def numbered_steps(self) -> list[int]:
        return [int(n) for n in re.findall(r"^(\d+)\. \*\*", self.section, re.MULTILINE)]


class Admin:
    """The admin driven by the README's words: links and buttons by their text, fields by their labels."""

    def __init__(self, page: Page, readme: Walkthrough) -> None:
        self.page, self.readme = page, readme

    def click(self, text: str, *, navigates: bool = True) -> None:
        """A model in the admin's lists (not the app's heading or a breadcrumb of the same name), else any link or
        button with exactly this text; waits for the page it opens."""
        self.readme.says(f"**{text}**")
        model = self.page.locator("th[scope=row] a").filter(has_text=re.compile(rf"^{re.escape(text)}$"))
        link = self.page.get_by_role("link", name=text, exact=True)
        button = self.page.get_by_role("button", name=text, exact=True)
        model.or_(link).or_(button).first.wait_for()
        target = next(candidate for candidate in (model, link, button) if candidate.count())
        if navigates:
            with self.page.expect_navigation():
                target.first.click()
        else:
            target.first.click()

    def field(self, label: str) -> Locator:
        return self.page.get_by_label(re.compile(rf"^{re.escape(label)}( |:|$)"))

    def fill(self, label: str, *, actual: str | None = None) -> str:
        value = self.readme.value(label)
        self.field(label).fill(actual if actual is not None else value)
        return value

    def choose(self, label: str, *, within: Locator | None = None) -> None:
        """A <select>: the option whose text starts with the README's value."""
        value = self.readme.value(label)
        select = self.field(label) if within is None else within
        option = select.locator("option").filter(has_text=re.compile(rf"^{re.escape(value)}"))
        select.select_option(value=option.first.get_attribute("value"))

    def inline(self, heading: str) -> Locator:
        self.readme.says(f"**{heading}**")
        return self.page.locator(".inline-group").filter(has=self.page.get_by_role("heading", name=heading))

    def cell(self, group: Locator, row: int, label: str) -> Locator:
        """The cell of a tabular inline's `row` (0-based, added rows) under the column headed `label`."""
        header = group.locator("thead th").filter(has_text=re.compile(rf"^\s*{re.escape(label)}"))
        column = next(c for c in header.first.get_attribute("class").split() if c.startswith("column-"))
        return group.locator("tbody tr.form-row:not(.empty-form)").nth(row).locator(f"td.field-{column[7:]}")

    def cell_fill(self, group: Locator, row: int, label: str) -> None:
        self.cell(group, row, label).locator("input").fill(self.readme.value(label))

    def cell_autocomplete(self, group: Locator, row: int, label: str) -> None:
        """An autocomplete (select2) cell: open it, type the README's value, take the match."""
        value = self.readme.value(label)
        self.cell(group, row, label).locator(".select2-selection").click()
        self.page.locator(".select2-container--open .select2-search__field").fill(value)
        self.page.locator(".select2-results__option").filter(has_text=re.compile(rf"^{re.escape(value)}$")).click()


def test_the_readme_campaign_yaml_imports_against_the_demo_as_written(tmp_path: Path, capsys) -> None:
    campaigns_demo.demo_load()
    yaml_file = tmp_path / "spring.yaml"
    yaml_file.write_text(fenced_block(readme_section("### Importing a campaign (YAML or JSON)"), "yaml"), "utf-8")
    call_command("import_campaign", str(yaml_file))
    assert "Imported campaign" in capsys.readouterr().out
    campaign = Campaign.objects.get(name="Spring outreach")
    assert [a.account.email for a in campaign.account_settings.select_related("account")] == ["maria@demo-sales.test"]
    assert campaign.steps.count() == 2 and campaign.status == Campaign.Status.ACTIVE


@pytest.mark.timeout(180)
def test_the_readme_walkthrough_sends_the_first_email_into_captured_mail(
    static_root: Path, tmp_path: Path, monkeypatch
) -> None:
    readme = Walkthrough()
    captured, smtp_port = tmp_path / "captured", free_port()
    # What `make demo` made (demo_setup): the admin with the printed password and the demo's data, its accounts
    # sending into this capture.
    admin_ensure(username="admin", password="emailsys-demo", email="admin@localhost")
    monkeypatch.setenv("SMTP_CAPTURE_PORT", str(smtp_port))
    campaigns_demo.demo_load()
    leads_csv = tmp_path / "leads.csv"
    leads_csv.write_text(fenced_block(readme.section, "csv"), encoding="utf-8")

    env = {"MAIL_CAPTURE_DIR": str(captured), "MEDIA_ROOT": str(tmp_path / "media")}
    with live_site(static_root=static_root, log_dir=tmp_path / "logs", **env) as site:
        capture_argv = [sys.executable, "manage.py", "smtp_capture", "--port", str(smtp_port), "--directory",
                        str(captured)]  # fmt: skip
        site.processes.append(start_process("smtp", capture_argv, env=site.env, log_dir=site.log_dir))
        site.start_worker("default", concurrency=1)
        site.start_worker("sending", concurrency=4)
        site.processes.append(start_process("beat", beat_argv(tmp_path), env=site.env, log_dir=site.log_dir))
        wait_until(lambda: port_answers(smtp_port), timeout=30, what="the SMTP capture listening")

        with chromium() as browser:
            page, problems = browser_page(browser, [])
            admin = Admin(page, readme)

            readme.step(1, "Log in.")
            page.goto(f"{site.url}{readme.says('/admin/')}")
            admin.fill("Username")
            admin.fill("Password")
            admin.click("Log in")

            readme.step(2, "A sender account.")
            admin.click("Sender accounts")
            admin.click("Add sender account")
            account_email = admin.fill("Email")
            for label in ("From name", "SMTP host"):
                admin.fill(label)
            admin.fill("SMTP port", actual=str(smtp_port))
            admin.choose("Security")
            admin.fill("Min wait")
            screenshot(page, "walkthrough-account")
            admin.click("Save")
            page.get_by_text("was added successfully").wait_for()

            readme.step(3, "Two templates.")
            admin.click("Email templates")
            admin.click("Add email template")
            first_template = admin.fill("Name")
            first_subject = admin.fill("Subject")
            first_body = admin.fill("Body text")
            admin.click("Save and add another")
            page.get_by_text("was added successfully").wait_for()
            second_template = admin.fill("Name")
            for label in ("Subject", "Body text"):
                admin.fill(label)
            admin.click("Save")
            page.get_by_text("was added successfully").wait_for()

            readme.step(4, "The campaign.")
            admin.click("Campaigns")
            admin.click("Add campaign")
            campaign_name = admin.fill("Name")
            accounts = admin.inline("Sender accounts (with this campaign's limits)")
            admin.click("Add another Sender account (with this campaign's limits)", navigates=False)
            admin.cell_autocomplete(accounts, 0, "Account")
            steps = admin.inline("Sequence steps")
            admin.click("Add another Sequence step", navigates=False)
            readme.says("twice")
            page.get_by_role("button", name="Add another Sequence step", exact=True).click()
            for row in (0, 1):
                admin.cell_fill(steps, row, "Order")
                admin.cell_fill(steps, row, "Delay")
                admin.cell_autocomplete(steps, row, "Template")
            readme.says("**Threaded** ticked")
            admin.cell(steps, 1, "Threaded").locator("input[type=checkbox]").check()
            screenshot(page, "walkthrough-campaign-form")
            admin.click("Save and continue editing")
            page.get_by_text("was added successfully").wait_for()
            campaign = Campaign.objects.get(name=campaign_name)
            assert campaign.status == Campaign.Status.DRAFT and campaign.time_zone == readme.says("UTC")
            readme.says("**Next send**")
            assert "activate it" in page.locator("#next-send").inner_text()  # a draft: it says what is missing
            steps_saved = campaign.steps.select_related("template").order_by("order")
            assert [(s.template.name, s.delay_seconds, s.threaded) for s in steps_saved] == [
                (first_template, 0, False), (second_template, 120, True)  # "0" and "2m"
            ]  # fmt: skip
            assert [(a.email, a.time_zone, a.min_wait_seconds) for a in campaign.accounts.all()] == [
                (account_email, "UTC", 10)
            ]

            readme.step(5, "Leads from a CSV.")
            readme.says("```csv")
            admin.click("Leads")
            admin.click("Import leads (CSV)")
            admin.choose("Campaign")
            readme.value("File")
            admin.field("File").set_input_files(str(leads_csv))
            admin.click("Upload and preview")
            assert "industry" in page.locator("table.import-mapping").inner_text()
            page.wait_for_function("() => document.body.dataset.liveState === 'live'")
            admin.click("Start the import", navigates=False)
            page.wait_for_selector("[data-status=done].import-panel", timeout=60_000)
            created = readme.value("Created")
            assert f"created\n{created}" in page.locator(".import-tiles").inner_text().lower()
            screenshot(page, "walkthrough-import-report")

            readme.step(6, "Activate it.")
            admin.click("Campaigns")
            readme.says(f"tick `{campaign_name}`")
            page.locator("#result_list tr").filter(
                has=page.get_by_role("link", name=campaign_name, exact=True)
            ).locator("input.action-select").check()
            admin.choose("Action", within=page.locator("select[name=action]"))
            admin.click("Go")
            page.get_by_text("now active").wait_for()

            readme.step(7, "Watch it send.")
            page.get_by_role("link", name=readme.says(campaign_name), exact=True).click()
            readme.says("**Progress**")
            page.get_by_role("heading", name="Progress").wait_for()
            page.wait_for_function("() => document.body.dataset.liveState === 'live'")
            page.evaluate("() => { window.__notReloaded = true; }")
            key = f"campaign-{campaign.pk}"
            readme.says("`Active`")
            assert page.locator(f"#{key}-status").inner_text() == "Active"
            readme.says("**Sent**")
            first_step_sent = f"#{key}-panel tbody tr:first-child .cl-col-sent"  # the panel is swapped on each update
            page.wait_for_function(  # moved by the page's socket as the sending pool sends (beat dispatches)
                "(cell) => Number(document.querySelector(cell).textContent) >= 1", arg=first_step_sent, timeout=60_000
            )
            assert page.evaluate("() => window.__notReloaded") is True
            screenshot(page, "walkthrough-campaign-sending")

            readme.step(8, "See the emails.")
            page.goto(f"{site.url}/admin/")
            admin.click("Captured mail")
            rendered_subject = readme.value("Subject")
            first_row = page.locator("#captured-mail tbody tr").filter(has_text=rendered_subject)
            for _ in range(30):  # the list is a plain page: reloaded until the email is there (it is sent already)
                if first_row.count():
                    break
                page.wait_for_timeout(500)
                page.reload()
            assert account_email in first_row.first.inner_text()
            assert page.locator(".messagelist").count() == 0  # the list is not shown again as notices
            screenshot(page, "walkthrough-captured-mail")
            first_row.first.get_by_role("link", name=rendered_subject).click()
            body = page.locator("body").inner_text()
            screenshot(page, "walkthrough-captured-message")
            assert problems.errors == []

    assert readme.steps_done == readme.numbered_steps() == list(range(1, 9))
    first = SendRecord.objects.get(campaign=campaign, recipient__email="pepper@stark.test", step__order=1)
    assert first.state == SendRecord.State.SENT and first.account.email == account_email
    assert first.subject == rendered_subject == first_subject.replace("{{ first_name }}", "Pepper")
    expected_body = first_body.replace("{{ first_name }}", "Pepper").replace("{{ company_name }}", "Stark Industries")
    assert expected_body.replace("{{ industry }}", "armor") in body


@pytest.mark.parametrize("model", ["campaign", "senderaccount"])
def test_an_add_form_starts_from_the_default_time_zone_not_the_first_in_the_list(admin_client, model: str) -> None:
    """The walkthrough leaves the time zone alone and gets UTC (the model's default), not "Africa/Abidjan"."""
    page = admin_client.get(f"/admin/campaigns/{model}/add/").content.decode()
    selected = re.findall(r'<option value="([^"]+)"[^>]*selected', page.split('name="time_zone"', 1)[1])
    assert selected[:1] == ["UTC"]
