"""The admin's forms used as a person would, in headless Chromium against daphne serving the shipped settings and
collected static files (the Content-Security-Policy allows no inline script: every widget's script is a static
file, and any refusal is a console error). One browser for the whole tour; each form is screenshotted to
var/screenshots/ (look at them)."""

from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from campaigns.models import Campaign, SequenceStep
from campaigns.tests.factories import (
    CampaignAccountFactory,
    CampaignFactory,
    EmailTemplateFactory,
    RecipientFactory,
    SequenceStepFactory,
)
from emailsys.testing_browser import browser_page, chromium, live_site, screenshot, session_cookies
from workorders.models import Segment, WorkOrder
from workorders.tests.factories import ContactFactory, WorkOrderFactory

pytestmark = pytest.mark.django_db(transaction=True)
WIDTH = 1280


def assert_fits_the_window(page: Page, what: str) -> None:
    widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"{what} is {widths[0]} px wide in a {widths[1]} px window"


def save(page: Page) -> None:
    with page.expect_navigation():
        page.locator("input[name=_continue]").click()


@pytest.mark.timeout(240)
def test_a_person_fills_the_admin_forms(static_root: Path, tmp_path: Path) -> None:
    admin = get_user_model().objects.create_superuser("forms-admin", "admin@example.test", "x")
    campaign = CampaignFactory(name="Spring outreach")
    step = SequenceStepFactory(campaign=campaign, template__name="Intro")
    CampaignAccountFactory(campaign=campaign, account__email="maria@emailsys.test")
    recipient = RecipientFactory(lead__campaign=campaign, company_name="Acme", email="ceo@acme.test",
                                 website="https://www.acme.test/a/very/long/path/" + "x" * 120,
                                 lead__custom_fields={"notes": "n" * 400, "industry": "anvils"})  # fmt: skip
    for extra in range(3):
        RecipientFactory(lead=recipient.lead, email=f"colleague{extra}-with-a-long-address@acme.test")
    lead = recipient.lead
    order = WorkOrderFactory(subjects={"en": "Join us"}, testers=[])
    for email, language in [("ana@example.test", "fr"), ("bob@example.test", "fr"), ("cy@example.test", "en")]:
        ContactFactory(email=email, language=language)
    template = EmailTemplateFactory(name="Follow-up", subject="Hi {{ first_name }}", body_text="Hello {{ first_name }}")

    with (
        live_site(static_root=static_root, log_dir=tmp_path) as site,
        chromium() as browser,
    ):
        page, problems = browser_page(browser, session_cookies(admin, site.url))
        page.set_viewport_size({"width": WIDTH, "height": 900})

        # The campaign: weekday checkboxes, a searchable time zone, a step's delay as a duration.
        page.goto(f"{site.url}/admin/campaigns/campaign/{campaign.pk}/change/")
        assert_fits_the_window(page, "the campaign page")
        expect(page.locator("#next-send")).to_contain_text("activate it")
        for day in ("Mon", "Wed", "Fri"):
            page.get_by_label(day, exact=True).check()
        page.get_by_label("Search time zone").fill("kolk")
        expect(page.locator("select[name=time_zone]")).to_have_value("Asia/Kolkata")
        page.locator("input[name=steps-0-delay_seconds]").fill("2d 4h")
        page.get_by_role("button", name="Add another Sequence step").click()  # a second step, its template written here
        page.locator("input[name=steps-1-order]").fill("2")
        page.locator("input[name=steps-1-delay_seconds]").fill("3d")
        page.locator("input[name=steps-1-new_subject]").fill("Following up, {{ first_name }}")
        page.locator("textarea[name=steps-1-new_body_text]").fill("Any news, {{ first_name }}?")
        assert_fits_the_window(page, "the campaign page with a new step")
        screenshot(page, "forms-campaign")
        save(page)
        expect(page.locator(".messagelist .success")).to_be_visible()
        for day, checked in (("Mon", True), ("Tue", False), ("Wed", True), ("Fri", True)):
            assert page.get_by_label(day, exact=True).is_checked() is checked, day
        expect(page.locator("input[name=steps-0-delay_seconds]")).to_have_value("2d 4h")
        expect(page.locator("select[name=time_zone]")).to_have_value("Asia/Kolkata")
        campaign.refresh_from_db()
        assert campaign.send_days == [0, 2, 4] and campaign.time_zone == "Asia/Kolkata"
        assert SequenceStep.objects.get(pk=step.pk).delay_seconds == 2 * 86400 + 4 * 3600
        second = SequenceStep.objects.select_related("template").get(campaign=campaign, order=2)
        assert (second.delay_seconds, second.template.name) == (3 * 86400, "Spring outreach — step 2")

        page.locator("input[name=steps-0-delay_seconds]").fill("2 days")
        save(page)
        expect(page.locator(".errorlist")).to_contain_text("is not a duration")
        expect(page.locator("input[name=steps-0-delay_seconds]")).to_have_value("2 days")
        assert SequenceStep.objects.get(pk=step.pk).delay_seconds == 2 * 86400 + 4 * 3600
        screenshot(page, "forms-campaign-bad-duration")

        # The lead: a readable title, and no wider than the window with long recipients and custom fields.
        page.goto(f"{site.url}/admin/campaigns/lead/{lead.pk}/change/")
        expect(page.locator(".breadcrumbs")).to_contain_text(f"Acme (lead {lead.pk}, Spring outreach)")
        assert_fits_the_window(page, "the lead page")
        screenshot(page, "forms-lead")

        # The work order: subjects per language and testers as rows.
        page.goto(f"{site.url}/admin/workorders/workorder/{order.pk}/change/")
        assert_fits_the_window(page, "the work-order page")
        page.get_by_role("button", name="Add a language").click()
        page.get_by_label("Language 3").fill("fr")
        page.get_by_label("Subject 3").fill("Rejoignez-nous")
        page.get_by_label("testers 1", exact=True).fill("ana@example.test")
        page.get_by_role("button", name="Add an address").click()
        page.get_by_label("testers 3", exact=True).fill("bob@example.test")
        page.locator("input[name=send_interval_seconds]").fill("90m")
        screenshot(page, "forms-workorder")
        save(page)
        expect(page.locator(".messagelist .success")).to_be_visible()
        order.refresh_from_db()
        assert order.subjects == {"en": "Join us", "fr": "Rejoignez-nous"}
        assert order.testers == ["ana@example.test", "bob@example.test"] and order.send_interval_seconds == 5400
        expect(page.locator("input[name=send_interval_seconds]")).to_have_value("1h 30m")
        assert_fits_the_window(page, "the saved work-order page")

        # A segment: the rule's live count as it is typed, and its errors.
        page.goto(f"{site.url}/admin/workorders/segment/add/")
        page.locator("input[name=name]").fill("French speakers")
        rule, count = page.locator("textarea[name=rule]"), page.locator("#id_rule_live_count")
        rule.fill('{"language": ["fr"]}')
        expect(count).to_contain_text("2 matching contacts now")
        rule.fill('{"language": ["fr"]')
        expect(count).to_contain_text("Not valid JSON")
        rule.fill('{"language": ["fr", "en"]}')
        expect(count).to_contain_text("3 matching contacts now")
        screenshot(page, "forms-segment")
        save(page)
        assert Segment.objects.get(name="French speakers").rule == {"language": ["fr", "en"]}

        # A template: the live preview beside the editor, and a render error shown, not a 500.
        page.goto(f"{site.url}/admin/campaigns/emailtemplate/{template.pk}/change/")
        preview = page.locator(".template-preview")
        expect(preview.locator(".preview-subject")).to_contain_text("Hi ")
        page.locator("textarea[name=body_text]").fill("Dear {{ first_name }}, about {{ company_name }}.")
        expect(preview.locator(".preview-text")).to_contain_text("Dear ")
        box, fields = preview.bounding_box(), page.locator(".template-editor-fields").bounding_box()
        assert box["x"] > fields["x"] + fields["width"] - 1, "the preview is beside the editor"
        screenshot(page, "forms-template")
        page.locator("textarea[name=body_text]").fill("Dear {{ first_name | nosuchfilter }}")
        expect(preview.locator(".preview-status")).to_contain_text("nosuchfilter")
        screenshot(page, "forms-template-error")

        # The index: Operations in the sidebar, beside the apps; "View site" is the dashboard.
        page.goto(f"{site.url}/admin/")
        operations, apps = page.locator("#operations-module"), page.locator("#content-main")
        assert operations.bounding_box()["x"] > apps.bounding_box()["x"] + apps.bounding_box()["width"] - 1
        assert page.get_by_role("link", name="View site").get_attribute("href") == "/admin/"
        assert_fits_the_window(page, "the dashboard")
        screenshot(page, "forms-index")

        # Chromium logs the 400 answers to a bad rule or template (the page shows them); nothing else.
        assert [error for error in problems.errors if "status of 400" not in error] == []
    assert Campaign.objects.get(pk=campaign.pk).send_days == [0, 2, 4]
    assert WorkOrder.objects.get(pk=order.pk).testers == ["ana@example.test", "bob@example.test"]
