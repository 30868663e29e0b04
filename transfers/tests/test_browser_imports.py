"""Issue 15's import acceptance in a real browser: an operator uploads a 10,000-row leads CSV with bad rows, sees
the preview and the column mapping, starts it, watches the progress bar move (live, over the page's socket,
while a real `default` pool worker imports), reads the report with the skipped lines and their reasons,
downloads it, then exports the campaign's leads from the lead list and checks the file."""

import csv
import io
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from campaigns.models import Recipient
from campaigns.tests.factories import CampaignFactory
from emailsys.testing_browser import browser_page, chromium, live_site, screenshot, session_cookies
from transfers.services.imports import import_job_permissions

pytestmark = pytest.mark.django_db(transaction=True)
ROWS = 10_000
BAD_LINES = {  # line number (header = 1) → the row written there and the reason the report must give
    101: ("bad-1,not-an-email,X,logistics", "invalid email 'not-an-email'"),
    2002: (",nobody@example.test,Y,energy", "lead_id is empty"),
    5003: ("lead-10,lead10@example.test,Z,energy", "is already listed for lead 'lead-10' on line 12"),
    8004: ("bad-4,x@example.test,Z,energy,surplus", "1 more value(s) than the header has columns"),
}


def leads_csv(path: Path) -> Path:
    lines, good = ["lead_id,email,first_name,industry"], 0
    while len(lines) < ROWS + 1:
        line_number = len(lines) + 1
        if line_number in BAD_LINES:
            lines.append(BAD_LINES[line_number][0])
        else:
            lines.append(f"lead-{good},lead{good}@example.test,Ann {good},logistics")
            good += 1
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def operator():
    user = get_user_model().objects.create_user("operator", is_staff=True)
    needed = ("transfers.view_importjob", *import_job_permissions(kind="leads"), "campaigns.view_lead",
              "campaigns.view_recipient", "campaigns.view_campaign")  # fmt: skip
    for permission in needed:
        app_label, codename = permission.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return user


@pytest.mark.timeout(240)
def test_operator_imports_10000_leads_with_bad_rows_watches_it_live_and_exports_them(
    static_root: Path, tmp_path: Path
) -> None:
    campaign = CampaignFactory(name="Spring outreach")
    user = operator()
    upload = leads_csv(tmp_path / "spring-leads.csv")
    with live_site(static_root=static_root, log_dir=tmp_path, MEDIA_ROOT=str(tmp_path / "media")) as site:
        site.start_worker("default", concurrency=1)
        with chromium() as browser:
            page, problems = browser_page(browser, session_cookies(user, site.url))
            page.goto(f"{site.url}/admin/campaigns/lead/?campaign__id__exact={campaign.pk}")
            page.click("text=Import leads (CSV)")
            assert page.locator("#id_campaign").input_value() == str(campaign.pk)
            page.set_input_files("#id_file", str(upload))
            page.click("text=Upload and preview")

            mapping = page.locator("table.import-mapping")
            assert "Custom lead field “industry”" in mapping.inner_text()
            assert page.locator("table.import-rows tbody tr").count() == 10
            page.wait_for_function("() => document.body.dataset.liveState === 'live'")
            screenshot(page, "import-preview")

            page.evaluate("""() => { window.__percents = [];
                document.addEventListener('live:update', e => window.__percents.push(e.detail.data.percent)); }""")
            page.click("#import-start")
            page.wait_for_selector("[data-status=done].import-panel", timeout=120_000)
            percents = page.evaluate("() => window.__percents")
            assert any(0 < percent < 100 for percent in percents), percents  # the bar moved before it was full
            assert percents[-1] == 100

            tiles = page.locator(".import-tiles").inner_text().lower()  # the labels are upper case by CSS
            assert f"created\n{ROWS - len(BAD_LINES)}" in tiles and f"skipped\n{len(BAD_LINES)}" in tiles
            skipped = page.locator("table.import-skipped tbody tr").all_inner_texts()
            for (line, (_row, reason)), shown in zip(sorted(BAD_LINES.items()), skipped, strict=True):
                assert shown.startswith(f"{line}\t") and reason in shown, shown
            screenshot(page, "import-report")

            with page.expect_download() as report_download:
                page.click("text=Download the report (CSV)")
            report = list(csv.reader(io.StringIO(Path(report_download.value.path()).read_text("utf-8-sig"))))
            assert ["created", str(ROWS - len(BAD_LINES)), "", ""] in report
            assert [row[2] for row in report if row[0] == "skipped" and row[2]] == [str(n) for n in sorted(BAD_LINES)]

            page.click("text=See the campaign's leads")
            with page.expect_download() as export_download:
                page.click("a.export-link")
            exported = list(csv.DictReader(io.StringIO(Path(export_download.value.path()).read_text("utf-8-sig"))))
            assert problems.errors == []
    assert len(exported) == ROWS - len(BAD_LINES) == Recipient.objects.filter(lead__campaign=campaign).count()
    assert {row["campaign_name"] for row in exported} == {"Spring outreach"}
    first = next(row for row in exported if row["lead_id"] == "lead-0")
    assert (first["email"], first["first_name"], first["recipient_status"], first["custom_fields"]) == (
        "lead0@example.test", "Ann 0", "not_contacted", '{"industry": "logistics"}'
    )  # fmt: skip
