import json
import re
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError

from campaigns.models import AccountDailyUsage, Campaign, Lead, Recipient, SenderAccount, SendRecord, Suppression
from campaigns.tests.conftest import NOW
from campaigns.tests.factories import (
    AccountDailyUsageFactory,
    CampaignAccountFactory,
    CampaignFactory,
    LeadFactory,
    RecipientFactory,
    SenderAccountFactory,
    SendRecordFactory,
    SequenceStepFactory,
)
from emailsys import crypto

pytestmark = pytest.mark.django_db


def run(*args, **options) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def cells(output: str) -> list[list[str]]:
    """Each output line split into its table cells (columns are separated by two or more spaces)."""
    return [re.split(r"\s{2,}", line.strip()) for line in output.splitlines()]


def ready_campaign(**kwargs) -> Campaign:
    campaign = CampaignFactory(**kwargs)
    SequenceStepFactory(campaign=campaign)
    CampaignAccountFactory(campaign=campaign)
    return campaign


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show_campaign", "999999"], "No campaign with id 999999"),
        (["show_campaign_progress", "999999"], "No campaign with id 999999"),
        (["reset_campaign_progress", "999999", "--yes"], "No campaign with id 999999"),
        (["import_leads", "999999", "leads.csv"], "No campaign with id 999999"),
        (["bulk_update_status", "--campaign-id", "999999", "--status", "contacted"], "No campaign with id 999999"),
        (["show_due_leads", "--campaign-id", "999999"], "No campaign with id 999999"),
        (["update_lead_statuses", "--campaign-id", "999999"], "No campaign with id 999999"),
        (["show_lead_details", "999999"], "No lead with id 999999"),
        (["reset_lead_progress", "999999"], "No lead with id 999999"),
        (["show_account_stats", "999999"], "No sender account with id 999999"),
        (["reset_account_limits", "999999"], "No sender account with id 999999"),
    ],
)
def test_an_unknown_id_is_a_clear_error(args, message):
    with pytest.raises(CommandError, match=f"^{message}$"):
        run(*args)


def test_list_campaigns_shows_each_campaign_with_its_counts():
    campaign = ready_campaign(name="Spring", status=Campaign.Status.ACTIVE)
    LeadFactory(campaign=campaign), LeadFactory(campaign=campaign, state=Lead.State.FINISHED)

    output = run("list_campaigns")

    header, rule, row = output.splitlines()
    assert header.split() == ["ID", "Name", "Status", "Steps", "Accounts", "Leads", "In", "progress", "Created"]
    assert set(rule) == {"-", " "}
    assert row.split()[:7] == [str(campaign.pk), "Spring", "active", "1", "1", "2", "1"]


def test_list_campaigns_without_campaigns_says_so():
    assert run("list_campaigns") == "No campaigns yet (import_campaign creates one).\n"


def test_show_campaign_lists_settings_steps_and_accounts():
    campaign = CampaignFactory(name="Spring", time_zone="Europe/Berlin", send_days=[0, 4], send_hour_start=9,
                               send_hour_end=17)  # fmt: skip
    SequenceStepFactory(campaign=campaign, delay_seconds=2 * 86400 + 3600, threaded=True,
                        template__name="spring-2", template__subject="Following up")  # fmt: skip
    account = SenderAccountFactory(email="sales@example.com", daily_limit=80)
    CampaignAccountFactory(campaign=campaign, account=account, min_wait_seconds=300)

    output = run("show_campaign", str(campaign.pk))

    assert f"Campaign:   {campaign.pk} Spring" in output
    assert "Sends on:   Mon, Fri, 09:00-17:00 (Europe/Berlin)" in output
    assert ["1", "2d 1h", "yes", "spring-2", "Following up"] in cells(output)
    assert [str(account.pk), "sales@example.com", "active", "80 (account)", "300", "0"] in cells(output)


def test_show_campaign_progress_prints_the_counts(now):
    campaign = CampaignFactory()
    lead = LeadFactory(campaign=campaign, current_step=2)
    SendRecordFactory(recipient=RecipientFactory(lead=lead, status="contacted"), state="sent",
                      sent_at=NOW - timedelta(hours=1))  # fmt: skip

    output = run("show_campaign_progress", str(campaign.pk))

    assert "Sent today (UTC): 1" in output
    rows = cells(output)
    assert ["in progress", "1"] in rows
    assert ["Current step", "Leads"] in rows and ["2", "1"] in rows
    assert ["contacted", "1"] in rows and ["not_contacted", "0"] in rows
    assert ["sent", "1"] in rows and ["failed", "0"] in rows


def test_show_lead_details_lists_recipients_and_what_each_was_sent():
    lead = LeadFactory(external_id="acme", custom_fields={"industry": "logistics"})
    jane = RecipientFactory(lead=lead, email="jane@acme.example", status="contacted")
    RecipientFactory(lead=lead, email="joe@acme.example")
    SendRecordFactory(recipient=jane, state="failed", last_error="550 mailbox full", account__email="s@x.example")

    output = run("show_lead_details", str(lead.pk))

    assert "External id:  acme" in output
    assert "industry  logistics" in output
    assert "Recipients (2)" in output
    rows = cells(output)
    assert [row[:2] for row in rows if row[0] in ("0", "1")] == [["0", "jane@acme.example"], ["1", "joe@acme.example"]]
    assert ["jane@acme.example", "1", "failed", "s@x.example", "-", "0", "550 mailbox full"] in rows


def test_show_due_leads_reports_how_many_are_due(now):
    campaign = CampaignFactory(status=Campaign.Status.ACTIVE, name="Spring")
    due = LeadFactory(campaign=campaign, external_id="acme", next_due_at=NOW - timedelta(minutes=5))
    RecipientFactory(lead=due), RecipientFactory(lead=due)
    LeadFactory(campaign=campaign, next_due_at=NOW + timedelta(hours=1))

    output = run("show_due_leads")

    assert output.startswith("Found 1 due leads.\n")
    assert [str(due.pk), "acme", f"{campaign.pk} Spring", "1", "2025-03-10 11:55:00 UTC", "2"] in cells(output)
    draft = CampaignFactory(name="Draft")
    assert run("show_due_leads", "--campaign-id", str(draft.pk)) == (
        f"Found 0 due leads.\nCampaign {draft.pk} Draft: Next send: not scheduled. The campaign is draft: activate it "
        "to send.\n"
    )


def test_reset_lead_progress_puts_the_lead_back_at_step_one(now):
    lead = LeadFactory(current_step=3, state=Lead.State.STOPPED, next_due_at=None)

    output = run("reset_lead_progress", str(lead.pk))

    assert output.startswith(f"Lead {lead.pk} reset: step 1, in_progress, due now.\n")  # then: the campaign is draft
    lead.refresh_from_db()
    assert (lead.current_step, lead.state, lead.next_due_at) == (1, "in_progress", NOW)


def test_update_lead_statuses_rebuilds_from_send_records():
    record = SendRecordFactory(state="sent")
    SendRecordFactory(state="sent")

    assert run("update_lead_statuses", "--campaign-id", str(record.campaign_id)) == (
        f"Updated 1 recipients in campaign {record.campaign_id}.\n"
    )
    assert Recipient.objects.get(pk=record.recipient_id).status == "contacted"
    assert run("update_lead_statuses") == "Updated 1 recipients.\n"


def test_list_accounts_never_shows_a_password():
    account = SenderAccountFactory(email="sales@example.com", smtp_password="hunter2-secret", provider="Gmail")
    CampaignAccountFactory(account=account)

    output = run("list_accounts")

    assert "hunter2" not in output
    assert "sales@example.com" in output and "127.0.0.1:1025" in output and "Gmail" in output
    assert output.splitlines()[2].rstrip().endswith("1")  # used by one campaign


def test_show_account_stats_shows_todays_usage_for_every_account(now):
    busy = SenderAccountFactory(email="busy@example.com", daily_limit=50, next_available_at=NOW + timedelta(minutes=4))
    AccountDailyUsageFactory(account=busy, day=NOW.date(), reserved=48)
    SendRecordFactory(account=busy, state="sent", sent_at=NOW - timedelta(hours=2))
    SenderAccountFactory(email="idle@example.com", daily_limit=20)

    output = run("show_account_stats")

    rows = {row[1]: row[2:] for row in cells(output)[2:]}
    busy_row = ["active", "48/50", "2", "1", "2025-03-10 12:04:00 UTC", "1", "0", "0", "0", "2025-03-10 10:00:00 UTC"]
    assert rows["busy@example.com"] == busy_row
    assert rows["idle@example.com"] == ["active", "0/20", "20", "0", "now", "0", "0", "0", "0", "-"]
    single = run("show_account_stats", str(busy.pk))
    assert "busy@example.com" in single and "idle@example.com" not in single


def test_reset_account_limits_makes_the_account_available(now):
    account = SenderAccountFactory(next_available_at=NOW + timedelta(hours=1))
    AccountDailyUsageFactory(account=account, day=NOW.date(), reserved=100)

    output = run("reset_account_limits", str(account.pk))

    assert output == f"Limits of account {account.pk} {account.email} reset: available now.\n"
    assert AccountDailyUsage.objects.get(account=account).reserved == 0
    assert SenderAccount.objects.get(pk=account.pk).next_available_at is None


def test_bulk_update_status_sets_every_recipient():
    recipient = RecipientFactory()
    campaign_id = recipient.lead.campaign_id

    output = run("bulk_update_status", "--campaign-id", str(campaign_id), "--status", "contacted")

    assert output == f"Set 1 recipients of campaign {campaign_id} to contacted.\n"
    assert Recipient.objects.get(pk=recipient.pk).status == "contacted"


def test_bulk_update_status_with_a_bad_status_lists_the_valid_ones():
    recipient = RecipientFactory()
    with pytest.raises(CommandError, match="'done' is not a recipient status; use one of: not_contacted, contacted"):
        run("bulk_update_status", "--campaign-id", str(recipient.lead.campaign_id), "--status", "done")
    assert Recipient.objects.get(pk=recipient.pk).status == "not_contacted"


@pytest.mark.parametrize(("answer", "reset"), [("no", False), ("", False), ("yes", True)])
def test_reset_campaign_progress_asks_first(monkeypatch, answer, reset):
    campaign = CampaignFactory(name="Spring")
    lead = LeadFactory(campaign=campaign, current_step=2)
    monkeypatch.setattr("builtins.input", lambda: answer)

    output = run("reset_campaign_progress", str(campaign.pk))

    assert f"Reset the progress of campaign {campaign.pk} 'Spring' (1 leads)?" in output
    assert ("Cancelled; nothing changed." in output) is not reset
    assert Lead.objects.get(pk=lead.pk).current_step == (1 if reset else 2)


def test_reset_campaign_progress_with_yes_does_not_ask(monkeypatch):
    campaign = CampaignFactory(status=Campaign.Status.COMPLETED)
    LeadFactory(campaign=campaign, current_step=2)
    monkeypatch.setattr("builtins.input", lambda: pytest.fail("asked for confirmation"))

    output = run("reset_campaign_progress", str(campaign.pk), "--yes")

    assert output == f"Reset 1 leads of campaign {campaign.pk}; status is paused.\n"


# --- imports ---------------------------------------------------------------------------------------------


def test_import_leads_reports_bad_rows_by_line_and_exits_1_after_importing_the_good_ones(tmp_path: Path):
    campaign = CampaignFactory()
    csv_file = tmp_path / "leads.csv"
    csv_file.write_text("\ufefflead_id,email,first_name\nacme,jane@acme.example,Jane\nacme,x@,X\n", encoding="utf-8")
    out = StringIO()

    with pytest.raises(CommandError, match=r"1 rows were not imported \(listed above\)") as caught:
        call_command("import_leads", str(campaign.pk), str(csv_file), stdout=out)

    assert caught.value.returncode == 1
    assert out.getvalue() == (
        f"Campaign {campaign.pk} recipients: created 1, updated 0, unchanged 0, skipped 1; leads: 1 new, "
        "0 with custom fields updated.\nline 3: invalid email 'x@'\n"
    )
    assert list(Recipient.objects.values_list("email", flat=True)) == ["jane@acme.example"]


def test_import_leads_twice_creates_nothing_the_second_time(tmp_path: Path):
    campaign = CampaignFactory()
    csv_file = tmp_path / "leads.csv"
    csv_file.write_text("lead_id,email\nacme,jane@acme.example\nacme,joe@acme.example\n")

    run("import_leads", str(campaign.pk), str(csv_file))
    output = run("import_leads", str(campaign.pk), str(csv_file))

    assert output == (
        f"Campaign {campaign.pk} recipients: created 0, updated 0, unchanged 2, skipped 0; leads: 0 new, "
        "0 with custom fields updated.\n"
    )
    assert Recipient.objects.count() == 2


def test_import_leads_refuses_a_file_without_an_email_column_or_that_does_not_exist(tmp_path: Path):
    campaign = CampaignFactory()
    csv_file = tmp_path / "leads.csv"
    csv_file.write_text("lead_id,mail\nacme,jane@acme.example\n")

    with pytest.raises(CommandError, match="The CSV header has no 'email' column"):
        run("import_leads", str(campaign.pk), str(csv_file))
    with pytest.raises(CommandError, match="Cannot read .*missing.csv: No such file or directory"):
        run("import_leads", str(campaign.pk), str(tmp_path / "missing.csv"))
    assert not Lead.objects.exists()


def test_import_campaign_from_yaml(tmp_path: Path):
    SenderAccountFactory(email="sales@example.com")
    path = tmp_path / "spring.yaml"
    path.write_text(
        "name: Spring\nstatus: active\nsteps:\n"
        "  - template: {name: s1, subject: Hi, body_text: Hello}\n"
        "  - delay: 2d\n    threaded: true\n    template: {name: s2, subject: Re, body_text: Again}\n"
        "accounts:\n  - email: sales@example.com\n"
    )

    output = run("import_campaign", str(path))

    campaign = Campaign.objects.get(name="Spring")
    assert output == f"Imported campaign {campaign.pk} 'Spring' (active): 2 steps, 1 accounts.\n"
    assert campaign.status == "active"


def test_import_campaign_from_json(tmp_path: Path):
    path = tmp_path / "spring.json"
    path.write_text(json.dumps({"name": "Spring", "steps": [{"template": {"name": "s1", "subject": "Hi",
                                                                        "body_html": "<p>Hi</p>"}}]}))  # fmt: skip

    run("import_campaign", str(path))

    assert Campaign.objects.get(name="Spring").steps.get().template.body_html == "<p>Hi</p>"


@pytest.mark.parametrize(
    ("file_name", "text", "message"),
    [
        ("bad.json", '{"name": "Spring",', "bad.json is not valid JSON"),
        ("bad.yaml", "name: Spring\n  steps: [", "bad.yaml is not valid YAML"),
        ("nameless.json", '{"steps": []}', "name: This field cannot be blank."),
        ("stepless.yaml", "name: S\nsteps:\n  - order: 1\n", r"steps\[0\]\.template: required"),
    ],
)
def test_import_campaign_refuses_malformed_or_incomplete_files(tmp_path: Path, file_name, text, message):
    path = tmp_path / file_name
    path.write_text(text)

    with pytest.raises(CommandError, match=message):
        run("import_campaign", str(path))
    assert not Campaign.objects.exists()


# --- suppression and keys --------------------------------------------------------------------------------


def test_suppress_an_address_and_a_domain():
    assert run("suppress", "Jane@Example.com", "--reason", "asked") == "Suppressed address jane@example.com.\n"
    assert run("suppress", "spam.example") == "Suppressed domain spam.example.\n"
    assert run("suppress", "spam.example").startswith("Already suppressed: domain spam.example (since ")
    assert sorted(Suppression.objects.values_list("value", "reason")) == [
        ("jane@example.com", "asked"),
        ("spam.example", ""),
    ]


def test_suppress_refuses_something_that_is_not_an_address_or_domain():
    with pytest.raises(CommandError, match="'not a domain' is neither an email address nor a domain name"):
        run("suppress", "not a domain")


def test_generate_encryption_key_prints_a_new_fernet_key():
    first, second = run("generate_encryption_key").strip(), run("generate_encryption_key").strip()
    assert first != second
    token = Fernet(first.encode()).encrypt(b"x")
    assert Fernet(first.encode()).decrypt(token) == b"x"


def test_rotate_encryption_keys_counts_reencrypted_passwords_and_never_prints_them(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    crypto._fernet.cache_clear()
    try:
        account = SenderAccountFactory(smtp_password="hunter2-secret")
        settings.FIELD_ENCRYPTION_KEYS = [new, old]
        crypto._fernet.cache_clear()

        output = run("rotate_encryption_keys")

        assert "campaigns.SenderAccount.smtp_password: 1 re-encrypted\n" in output
        assert "campaigns.SenderAccount.esp_secret: 0 re-encrypted\n" in output and "hunter2" not in output
        settings.FIELD_ENCRYPTION_KEYS = [new]
        crypto._fernet.cache_clear()
        assert SenderAccount.objects.get(pk=account.pk).smtp_password == "hunter2-secret"
    finally:
        crypto._fernet.cache_clear()


def test_rotate_encryption_keys_without_the_old_key_is_a_clear_error(settings):
    SenderAccountFactory(smtp_password="hunter2-secret")
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    crypto._fernet.cache_clear()
    try:
        with pytest.raises(CommandError, match="cannot be decrypted with any key"):
            run("rotate_encryption_keys")
    finally:
        crypto._fernet.cache_clear()


def test_send_states_in_show_lead_details_cover_a_sent_email(now):
    record = SendRecordFactory(state=SendRecord.State.SENT, sent_at=NOW)
    output = run("show_lead_details", str(record.lead_id))
    assert "sent  " in output and "2025-03-10 12:00:00 UTC" in output
