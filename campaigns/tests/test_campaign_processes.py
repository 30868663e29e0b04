"""The campaign engine as it runs in production: beat, a default worker (dispatch) and sending workers as
separate processes, an SMTP server on loopback recording what it accepts, and a clock the test moves."""

import socket
import time
from datetime import UTC, datetime, timedelta
from datetime import time as time_of_day
from pathlib import Path

import pytest

from campaigns.models import Lead
from campaigns.tests.scenarios import assert_mail_is_its_send_record, campaign_scenario, dispatch_tick_every
from emailsys.clock import clock_set_offset
from emailsys.metrics import TASK_METRICS_KEY
from emailsys.ops_clients import ops_redis
from emailsys.testing import RecordingSmtpServer, beat_argv, process_env, unique_token, wait_until, worker_argv

pytestmark = pytest.mark.django_db(transaction=True)


def dispatch_runs() -> int:
    raw = ops_redis().hget(TASK_METRICS_KEY, "campaigns.dispatch_due\x1fstate\x1fsucceeded")
    return int(raw or 0)


def start_engine(processes, tmp_path: Path, *, sending_workers: int = 1, **env_overrides: str) -> None:
    """Beat ticking the dispatcher every second, one default worker, `sending_workers` sending workers."""
    dispatch_tick_every(seconds=1)
    ops_redis().delete(TASK_METRICS_KEY)
    env = process_env(**env_overrides)
    token = unique_token()
    host = socket.gethostname()
    processes("worker-default", worker_argv("default", node_name=f"default-{token}@{host}"), env=env)
    for index in range(sending_workers):
        node = f"sending{index}-{token}@{host}"
        processes(f"worker-sending-{index}", worker_argv("sending", node_name=node, concurrency=4), env=env)
    processes("beat", beat_argv(tmp_path), env=env)


def wait_for_quiet(*, ticks: int = 3, timeout: float = 60) -> None:
    """The dispatcher ran `ticks` more times: whatever was due has been handed out by now."""
    start = dispatch_runs()
    wait_until(lambda: dispatch_runs() >= start + ticks, timeout=timeout, interval=0.2, what="dispatch ticks")


def noon_offset(days: int = 0) -> float:
    """Seconds to add to the real clock so that it reads 12:00 UTC today (+ days)."""
    real = datetime.now(UTC)
    noon = real.replace(hour=12, minute=0, second=0, microsecond=0) + timedelta(days=days)
    return (noon - real).total_seconds()


@pytest.mark.timeout(240)
def test_three_accounts_of_five_send_fifteen_today_and_fifteen_more_tomorrow(processes, tmp_path, settings) -> None:
    clock_file = tmp_path / "clock-offset"
    clock_set_offset(path=clock_file, seconds=noon_offset())
    settings.CLOCK_OFFSET_FILE = str(clock_file)
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, accounts=3, daily_limit=5, leads=20, recipients_per_lead=2)
        start_engine(processes, tmp_path, CLOCK_OFFSET_FILE=str(clock_file))

        wait_until(lambda: len(smtp.snapshot()) >= 15, timeout=90, interval=0.2, what="15 messages accepted")
        clock_today = (datetime.now(UTC) + timedelta(seconds=noon_offset())).date()
        tomorrow_midnight = datetime.combine(clock_today + timedelta(days=1), time_of_day(0), tzinfo=UTC)
        waiting = Lead.objects.filter(campaign=scenario.campaign, state="in_progress")
        # Batches still in flight hold their leads under a short claim; once settled, every lead waits for tomorrow.
        wait_until(
            lambda: all(lead.next_due_at >= tomorrow_midnight for lead in waiting.all()),  # .all(): re-read
            timeout=60,
            interval=0.2,
            what=f"every lead waiting for tomorrow's limits ({tomorrow_midnight})",
        )
        wait_for_quiet()
        today = smtp.snapshot()
        assert len(today) == 15
        assert waiting.count() == 20

        clock_set_offset(path=clock_file, seconds=noon_offset(days=1))
        wait_until(lambda: len(smtp.snapshot()) >= 30, timeout=90, interval=0.2, what="15 more messages tomorrow")
        wait_for_quiet()
        both_days = smtp.snapshot()

    assert len(both_days) == 30
    records = [assert_mail_is_its_send_record(mail, scenario.campaign) for mail in both_days]
    pairs = [(record.recipient_id, record.step_id) for record in records]
    assert len(set(pairs)) == 30, "a recipient got the same step twice"
    for day_mails in (both_days[:15], both_days[15:]):
        per_account = {}
        for mail in day_mails:
            per_account[mail.mail_from] = per_account.get(mail.mail_from, 0) + 1
        assert sorted(per_account.values()) == [5, 5, 5]


@pytest.mark.timeout(240)
def test_a_connection_pool_bounds_the_database_connections_of_many_sending_threads(processes, tmp_path) -> None:
    app_name = f"emailsys-sending-{unique_token()}"
    with RecordingSmtpServer(data_delay=0.3) as smtp:
        campaign_scenario(smtp_port=smtp.port, accounts=20, daily_limit=1000, leads=48, recipients_per_lead=1,
                          steps=1, batch_size=2)  # fmt: skip
        env = process_env(DB_POOL_MAX_SIZE="3", PGAPPNAME=app_name)  # libpq names the worker's connections
        node = f"sending-{unique_token()}@{socket.gethostname()}"
        processes("worker-sending", worker_argv("sending", node_name=node, concurrency=16), env=env)
        start_engine(processes, tmp_path, sending_workers=0)
        peak = 0
        deadline = time.monotonic() + 120
        while len(smtp.snapshot()) < 48 and time.monotonic() < deadline:
            peak = max(peak, sending_connections(app_name))
            time.sleep(0.05)  # sampling rate of the connection count, not a wait for an outcome
        assert len(smtp.snapshot()) == 48

    assert 1 <= peak <= 3, f"{peak} connections from one sending worker with a pool of 3"
    assert smtp.max_waiting_replies > 3, "SMTP exchanges in flight at once should outnumber the connections"


def sending_connections(application_name: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application_name])
        return cursor.fetchone()[0]
