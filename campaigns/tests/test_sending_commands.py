"""The sending commands an operator runs by hand, and every campaigns command answering --help."""

import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from campaigns.models import DryRunRecord, OperatorTestSend, SendRecord
from campaigns.tests.scenarios import campaign_scenario
from emailsys.testing import BASE_DIR, RecordingSmtpServer, free_port

pytestmark = pytest.mark.django_db

SEED_COMMANDS = [
    "run_dispatcher", "show_lead_details", "show_due_leads", "reset_lead_progress", "update_lead_statuses",
    "list_campaigns", "show_campaign", "show_campaign_progress", "list_accounts", "show_account_stats",
    "reset_account_limits", "debug_template", "test_smtp", "bulk_update_status", "reset_campaign_progress",
    "import_leads", "import_campaign", "send_test",
]  # fmt: skip


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_every_command_of_the_seed_cli_has_help() -> None:
    for command in SEED_COMMANDS:
        result = subprocess.run([sys.executable, "manage.py", command, "--help"], cwd=BASE_DIR, capture_output=True,
                                text=True)  # fmt: skip
        assert result.returncode == 0, (command, result.stderr)
        assert "usage:" in result.stdout and len(result.stdout) > 200, command


def test_run_dispatcher_once_sends_what_is_due_and_reports_it() -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=3, recipients_per_lead=1, steps=1, daily_limit=50)
        output = run("run_dispatcher", "--once", "--verbose", "--campaign-id", str(scenario.campaign.id))
        assert len(smtp.snapshot()) == 3
    assert output.count(": sent") == 3 and "3 lead(s): 3 sent" in output
    assert SendRecord.objects.filter(state="sent").count() == 3


def test_run_dispatcher_dry_run_renders_and_sends_nothing() -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=2, recipients_per_lead=2, steps=1, daily_limit=50)
        output = run("run_dispatcher", "--once", "--dry-run", "--verbose")
        assert smtp.snapshot() == []
    assert "4 email(s) rendered, nothing sent" in output
    assert DryRunRecord.objects.filter(campaign=scenario.campaign).count() == 4
    assert not SendRecord.objects.exists()


def test_run_dispatcher_rejects_unknown_ids() -> None:
    with pytest.raises(CommandError, match="No campaign with id 999"):
        run("run_dispatcher", "--once", "--campaign-id", "999")
    with pytest.raises(CommandError, match="No account with id 998"):
        run("run_dispatcher", "--once", "--account-filter", "998")


def test_debug_template_shows_defaults_and_variables() -> None:
    scenario = campaign_scenario(smtp_port=free_port(), leads=1, recipients_per_lead=1, steps=1)
    output = run("debug_template", str(scenario.campaign.id), "--lead-id", str(scenario.leads[0].id))
    assert "Subject: Hello there from Sender 0" in output  # lead 0's recipient has no first name
    assert "Hi there," in output and "sender_email='sender0@scenario.test'" in output
    with pytest.raises(CommandError, match="has no step 7"):
        run("debug_template", str(scenario.campaign.id), "--step", "7")


def test_test_smtp_reports_success_and_failure() -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, accounts=1, leads=0)
        assert "NOOP 250" in run("test_smtp", str(scenario.accounts[0].id))
    scenario.accounts[0].smtp_port = free_port()
    scenario.accounts[0].save()
    with pytest.raises(CommandError, match="ConnectionRefusedError"):
        run("test_smtp", str(scenario.accounts[0].id), "--timeout", "2")


def test_send_test_sends_one_marked_message() -> None:
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, leads=1, recipients_per_lead=1, steps=2)
        output = run("send_test", str(scenario.campaign.id), "--to", "me@team.test", "--step", "2")
        (mail,) = smtp.snapshot()
    assert mail.rcpt_tos == ("me@team.test",) and b"Subject: [TEST] Hello there" in mail.content
    assert "sent step 2 to me@team.test" in output
    assert OperatorTestSend.objects.get().to_email == "me@team.test"
    with pytest.raises(CommandError, match="not an email address"):
        run("send_test", str(scenario.campaign.id), "--to", "nobody")
