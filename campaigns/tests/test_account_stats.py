"""An account's stats count event-mailing sends like campaign sends, "Next available" knows the day's limit, and
resetting the limits wakes a work order sleeping on the account: judged by the command's output, the admin's
pages and the mail a real SMTP server receives (a real `workorders` worker sends the rest)."""

import re
from datetime import UTC, timedelta
from io import StringIO

import pytest
from django.core.management import call_command

from campaigns.tests.factories import SendRecordFactory
from emailsys import clock
from emailsys.testing import RecordingSmtpServer, process_env, unique_token, wait_until, worker_argv
from workorders.models import WorkOrder, WorkOrderStep
from workorders.services.state import workorder_steps_create
from workorders.services.steps import workorder_run
from workorders.services.sweep import workorders_wake_for_account
from workorders.tests.factories import ContactFactory, WorkOrderFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def smtp():
    with RecordingSmtpServer() as server:
        yield server


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    """Prepared emails go to this test's own directory (a worker process is given the same)."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def stats_row(output: str, email: str) -> list[str]:
    rows = [re.split(r"\s{2,}", line.strip()) for line in output.splitlines()]
    headers = rows[0]
    (row,) = [row for row in rows[2:] if row[1] == email]
    return dict(zip(headers, row, strict=True))


def zone_at_midday() -> str:
    """A time zone where it is about noon now, so no local midnight resets the limit while a test runs."""
    offset = (12 - clock.now().hour + 12) % 24 - 12  # UTC+offset, -12..11
    return "Etc/UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"  # Etc/GMT-3 is UTC+3


def mailing_that_uses_up_its_account(smtp: RecordingSmtpServer, *, daily_limit: int, contacts: int) -> WorkOrder:
    """An English-only work order whose account's limit ends the Send step early: it sleeps until midnight."""
    for _ in range(contacts):
        ContactFactory(language="en")
    work_order = WorkOrderFactory(
        account__smtp_port=smtp.port,
        account__daily_limit=daily_limit,
        account__time_zone=zone_at_midday(),
        subjects={"en": ""},
        auto_approve=True,
    )
    workorder_steps_create(work_order=work_order)
    assert workorder_run(work_order_id=work_order.id) == "sleeping"
    return work_order


def test_event_mailing_sends_count_as_sent_today_and_a_used_up_limit_is_not_available_now(smtp, admin_client):
    work_order = mailing_that_uses_up_its_account(smtp, daily_limit=2, contacts=3)
    account = work_order.account
    SendRecordFactory(account=account, state="sent", sent_at=clock.now())  # a campaign's send, counted too
    midnight = clock.local_midnight_next(time_zone=account.time_zone, at=clock.now())
    assert len(smtp.snapshot()) == 2

    row = stats_row(run("show_account_stats"), account.email)

    assert (row["Today"], row["Remaining"], row["Sent today"], row["Sent"]) == ("2/2", "0", "3", "3")
    assert row["Next available"] == f"{midnight.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"  # the account's midnight
    changelist = admin_client.get("/admin/campaigns/senderaccount/").content.decode()
    assert re.search(rf'id="account-{account.pk}-sent-today"[^>]*>3</span>', changelist), changelist
    panel = admin_client.get(f"/admin/campaigns/senderaccount/{account.pk}/change/").content.decode()
    assert '<dt>Sent today</dt><dd class="live-figure cl-sent-today">3</dd>' in panel
    assert f"<dt>Next available</dt><dd>{midnight:%b %-d, 00:00:00} " in panel, panel  # the local midnight


@pytest.mark.timeout(120)
def test_reset_account_limits_wakes_the_work_order_sleeping_on_the_account_and_it_sends_the_rest(
    smtp, processes, media_root
) -> None:
    work_order = mailing_that_uses_up_its_account(smtp, daily_limit=1, contacts=3)
    account = work_order.account
    account.daily_limit = 3  # the operator raises the limit, then resets today's usage
    account.save(update_fields=["daily_limit"])
    assert len(smtp.snapshot()) == 1
    env = process_env(MEDIA_ROOT=str(media_root))
    processes("worker", worker_argv("workorders", node_name=f"wake-{unique_token()}@localhost"), env=env)

    output = run("reset_account_limits", str(account.pk))

    assert output == (
        f"Limits of account {account.pk} {account.email} reset: available now.\n"
        f"Woke work order(s) {work_order.id}, waiting on this account.\n"
    )
    wait_until(lambda: len(smtp.snapshot()) == 3, timeout=60, what="the two other contacts' emails")
    wait_until(
        lambda: WorkOrder.objects.get(id=work_order.id).status == WorkOrder.Status.COMPLETE,
        timeout=30,
        what="the work order complete",
    )
    assert len({mail.rcpt_tos for mail in smtp.snapshot()}) == 3  # each contact once


def test_a_send_continuously_sleeping_between_rounds_is_not_woken_by_a_reset(smtp) -> None:
    work_order = WorkOrderFactory(
        account__smtp_port=smtp.port, send_continuously=True, send_until=clock.now() + timedelta(days=1)
    )
    workorder_steps_create(work_order=work_order)
    WorkOrder.objects.filter(id=work_order.id).update(status=WorkOrder.Status.SLEEPING, resume_at=clock.now())
    WorkOrderStep.objects.filter(work_order=work_order, name="send_continuously").update(
        status=WorkOrderStep.Status.SLEEPING, message="round 1: 3 sent; next round at 12:00:00", started_at=clock.now()
    )

    assert workorders_wake_for_account(account_id=work_order.account_id) == []
    assert run("reset_account_limits", str(work_order.account_id)).count("\n") == 1
