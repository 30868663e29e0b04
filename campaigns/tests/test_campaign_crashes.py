"""Concurrency and crashes with real processes: four sending workers racing over shared accounts, kill -9 at
fixed points of a send, and the seed's stop-everything-and-restart scenario."""

import socket
import threading
import time
from collections import Counter, defaultdict
from datetime import timedelta

import psycopg
import pytest

from campaigns.models import Lead, SendRecord
from campaigns.tests.scenarios import TaskEvents, campaign_scenario, lead_add
from campaigns.tests.test_campaign_processes import start_engine, wait_for_quiet
from emailsys.clock import clock_set_offset
from emailsys.testing import RecordingSmtpServer, process_env, subprocess_database_url, unique_token, wait_until
from emailsys.testing import worker_argv as project_worker_argv

pytestmark = pytest.mark.django_db(transaction=True)


def batch_intervals(events: TaskEvents) -> list[tuple[str, float, float]]:
    """(worker, started, finished) of every run of a send batch."""
    return [
        (host, started, finished)
        for run in events.of("campaigns.send_batch")
        for (host, started), (_, finished) in zip(run.started, run.finished, strict=False)
    ]


def max_workers_at_once(intervals: list[tuple[str, float, float]]) -> int:
    """The most distinct workers that were inside a batch at the same instant."""
    best = 0
    for _, start, _ in intervals:
        inside = {host for host, s, e in intervals if s <= start < e}
        best = max(best, len(inside))
    return best


@pytest.mark.timeout(240)
def test_four_racing_workers_never_exceed_a_limit_or_undercut_a_min_wait(processes, tmp_path) -> None:
    min_wait, daily_limit = 1.0, 6
    with RecordingSmtpServer(data_delay=0.3) as smtp, TaskEvents() as events:
        scenario = campaign_scenario(smtp_port=smtp.port, accounts=4, daily_limit=daily_limit,
                                     min_wait_seconds=int(min_wait), leads=40, recipients_per_lead=1, steps=1,
                                     batch_size=2)  # fmt: skip
        start_engine(processes, tmp_path, sending_workers=4)
        wait_until(lambda: len(smtp.snapshot()) >= 4 * daily_limit, timeout=120, interval=0.2, what="24 messages")
        wait_for_quiet(ticks=3)
        mails = smtp.snapshot()

    assert len(mails) == 4 * daily_limit
    by_account = defaultdict(list)
    for mail in mails:
        by_account[mail.mail_from].append(mail.received_at)
    assert {account: len(times) for account, times in by_account.items()} == {
        account.email: daily_limit for account in scenario.accounts
    }
    for account, times in by_account.items():
        gaps = [later - earlier for earlier, later in zip(sorted(times), sorted(times)[1:], strict=False)]
        assert min(gaps) >= min_wait, f"{account}: two sends {min(gaps):.3f}s apart"
    intervals = batch_intervals(events)
    workers = {host for host, _, _ in intervals}
    assert len(workers) == 4, f"batches ran on {workers}"
    assert max_workers_at_once(intervals) >= 2, "no two workers' batches overlapped"
    assert Counter(m.rcpt_tos for m in mails).most_common(1)[0][1] == 1


def lock_send_record_until_released(database_url: str, message_id: str, locked: threading.Event,
                                    release: threading.Event) -> None:  # fmt: skip
    """Holds the send record's row lock from another connection: the worker's "sent" update must wait."""
    connection = psycopg.connect(database_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM campaigns_sendrecord WHERE message_id = %s FOR UPDATE", [message_id])
            locked.set()
            release.wait(60)
        connection.rollback()
    finally:
        connection.close()


# The worker's "sent" statement (an UPDATE of the send record, inside a WITH) waiting on the held row lock.
BLOCKED_SENT_UPDATE = r"wait_event_type = 'Lock' AND query ~ 'UPDATE\s+campaigns_sendrecord'"


def worker_is_waiting_on_a_lock(database_url: str) -> bool:
    with psycopg.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM pg_stat_activity WHERE {BLOCKED_SENT_UPDATE}")  # noqa: S608 - constant
        return cursor.fetchone()[0] > 0


def terminate_blocked_update(database_url: str) -> None:
    """A dead worker's backend would still run its queued UPDATE once the lock is free; a machine that died
    takes that connection with it, so it goes too."""
    with psycopg.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {BLOCKED_SENT_UPDATE}")  # noqa: S608


@pytest.mark.timeout(240)
@pytest.mark.parametrize("kill_point", ["after_claim", "during_data", "after_data_before_recording"])
def test_kill_9_of_the_worker_never_sends_twice(kill_point: str, processes, tmp_path) -> None:
    lease = 4
    env = {"CAMPAIGN_SEND_LEASE_SECONDS": str(lease), "CAMPAIGN_SMTP_TIMEOUT": "2"}
    database_url = subprocess_database_url()
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, accounts=1, daily_limit=50, leads=3, recipients_per_lead=1,
                                     steps=1, batch_size=3)  # fmt: skip
        if kill_point == "after_claim":
            smtp.stall_next("mail")  # the claim is committed, SMTP has begun, nothing handed over
        elif kill_point == "during_data":
            smtp.stall_next("data")  # the whole message arrived; the reply to the final dot is held
        else:
            locked, release = threading.Event(), threading.Event()

            def hold_record(mail) -> None:
                if locked.is_set():
                    return
                message_id = next(
                    line.split(b":", 1)[1].strip().decode()
                    for line in mail.content.splitlines()
                    if line.lower().startswith(b"message-id:")
                )
                threading.Thread(
                    target=lock_send_record_until_released, args=(database_url, message_id, locked, release),
                    daemon=True,
                ).start()  # fmt: skip
                locked.wait(10)

            smtp.before_data_reply = hold_record

        worker_env = process_env(**env)
        node = f"sending-{unique_token()}@{socket.gethostname()}"
        worker = processes("worker-sending", project_worker_argv("sending", node_name=node, concurrency=1),
                           env=worker_env)  # fmt: skip
        start_engine(processes, tmp_path, sending_workers=0, **env)

        def sent_count() -> int:
            return SendRecord.objects.filter(campaign=scenario.campaign, state="sent").count()

        if kill_point == "after_data_before_recording":
            wait_until(lambda: worker_is_waiting_on_a_lock(database_url), timeout=60, what="worker blocked on 'sent'")
        elif kill_point == "during_data":
            # The worker keeps several messages awaiting their verdicts: the held reply holds up no other.
            wait_until(lambda: smtp.stalled.is_set() and sent_count() == 2, timeout=60,
                       what="the other two sent while one verdict is held")  # fmt: skip
        else:
            wait_until(smtp.stalled.is_set, timeout=60, what=f"worker stalled at {kill_point}")
        worker.kill()
        if kill_point == "after_data_before_recording":
            terminate_blocked_update(database_url)
            release.set()
        # In flight at the kill: messages the server had taken whose "sent" the worker had not recorded.
        in_flight = len(smtp.snapshot()) - sent_count()
        smtp.release()
        killed_at = time.monotonic()

        processes("worker-sending-restarted", project_worker_argv("sending", node_name=f"again-{node}", concurrency=1),
                  env=worker_env)  # fmt: skip
        final = SendRecord.FINAL_STATES

        def all_settled() -> bool:
            return SendRecord.objects.filter(campaign=scenario.campaign, state__in=final).count() == 3

        wait_until(all_settled, timeout=lease + 60, interval=0.3, what="every recipient settled after the restart")
        wait_for_quiet(ticks=2)
        mails = smtp.snapshot()

    deliveries = Counter(mail.rcpt_tos[0] for mail in mails)
    assert all(count == 1 for count in deliveries.values()), f"duplicate delivery: {deliveries}"
    records = list(SendRecord.objects.filter(campaign=scenario.campaign).select_related("recipient"))
    states = Counter(record.state for record in records)
    assert set(states) <= {"sent", "failed", "unknown"}
    assert all(record.last_error for record in records if record.state == "failed")
    assert states["unknown"] <= in_flight
    if kill_point == "after_claim":
        assert in_flight == 0
        assert states == {"sent": 3}, "a claim committed before SMTP began must end up sent"
    else:
        assert in_flight >= 1
        assert states == Counter(sent=3 - in_flight, unknown=in_flight)  # missing counts as 0
    if kill_point == "during_data":
        assert in_flight == 1
    assert len(mails) == 3  # an unknown one did arrive once, and was never sent again
    assert time.monotonic() - killed_at < lease + 60


@pytest.mark.timeout(240)
def test_restart_between_two_recipients_resumes_overdue_leads_first(processes, tmp_path, settings) -> None:
    clock_file = tmp_path / "clock-offset"
    clock_set_offset(path=clock_file, seconds=0)
    settings.CLOCK_OFFSET_FILE = str(clock_file)
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, accounts=2, daily_limit=100, min_wait_seconds=600, leads=1,
                                     recipients_per_lead=2, steps=1)  # fmt: skip
        (interrupted,) = scenario.leads
        start_engine(processes, tmp_path, sending_workers=1, CLOCK_OFFSET_FILE=str(clock_file))
        wait_until(lambda: len(smtp.snapshot()) == 1, timeout=60, what="recipient 1 sent")
        first_sent_at = wait_until(
            lambda: Lead.objects.get(id=interrupted.id).last_sent_at, timeout=30, what="recipient 1 recorded"
        )
        wait_until(
            lambda: Lead.objects.get(id=interrupted.id).next_due_at >= first_sent_at + timedelta(seconds=600),
            timeout=30,
            what="the lead waits the min wait before recipient 2",
        )
        for process in processes.started:
            process.stop()

        # While everything is stopped, another lead is due a minute after the interrupted one.
        due = Lead.objects.get(id=interrupted.id).next_due_at
        lead_add(campaign=scenario.campaign, index=1, recipients=1, next_due_at=due + timedelta(minutes=1))
        clock_set_offset(path=clock_file, seconds=3 * 3600)  # hours later: both are overdue

        start_engine(processes, tmp_path, sending_workers=1, CLOCK_OFFSET_FILE=str(clock_file))
        wait_until(lambda: len(smtp.snapshot()) == 3, timeout=60, what="both overdue emails sent")
        wait_for_quiet(ticks=2)
        mails = smtp.snapshot()

    assert [mail.rcpt_tos[0] for mail in mails] == [
        "r0.lead0@customer.test",  # before the stop
        "r1.lead0@customer.test",  # first after the restart: recipient 2 of the most overdue lead
        "r0.lead1@customer.test",  # then the next overdue lead; recipient 1 of lead 0 is never sent again
    ]


@pytest.mark.timeout(120)
def test_kill_9_after_reserving_a_batch_still_sends_the_full_daily_limit_that_day(processes, tmp_path) -> None:
    """The batch reserved the account's whole day (6) and had claimed one send row when the worker died: the
    five reserved sends without a row come back after their lease, so the account still sends 6 that day."""
    lease, daily_limit = 4, 6
    worker_env = process_env(CAMPAIGN_SEND_LEASE_SECONDS=str(lease))
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, accounts=1, daily_limit=daily_limit, leads=10,
                                     recipients_per_lead=1, steps=1, batch_size=10)  # fmt: skip
        (account,) = scenario.accounts
        smtp.stall_next("mail")  # the batch's first send: reserved (all 6) and claimed, nothing handed over
        node = f"sending-{unique_token()}@{socket.gethostname()}"
        worker = processes("worker-sending", project_worker_argv("sending", node_name=node, concurrency=1),
                           env=worker_env)  # fmt: skip
        start_engine(processes, tmp_path, sending_workers=0, CAMPAIGN_SEND_LEASE_SECONDS=str(lease))
        wait_until(smtp.stalled.is_set, timeout=60, what="the worker mid-batch, its first send held at MAIL")
        assert account.daily_usage.get().reserved == daily_limit  # the whole day is reserved by the dying batch
        worker.kill()
        smtp.release()

        processes("worker-sending-restarted", project_worker_argv("sending", node_name=f"again-{node}", concurrency=1),
                  env=worker_env)  # fmt: skip
        wait_until(lambda: len(smtp.snapshot()) >= daily_limit, timeout=lease * 3 + 30, interval=0.3,
                   what="the account's full daily limit sent after the restart")  # fmt: skip
        wait_for_quiet(ticks=lease + 2)  # the held leases are long past: nothing more may go today
        mails = smtp.snapshot()

    assert len(mails) == daily_limit, f"{len(mails)} sent today, the account's limit is {daily_limit}"
    assert {mail.mail_from for mail in mails} == {account.email}
    deliveries = Counter(mail.rcpt_tos[0] for mail in mails)
    assert max(deliveries.values()) == 1, f"duplicate delivery: {deliveries}"
    assert SendRecord.objects.filter(campaign=scenario.campaign, state="sent").count() == daily_limit
    assert account.daily_usage.get().reserved == daily_limit
    waiting = Lead.objects.filter(campaign=scenario.campaign, state=Lead.State.IN_PROGRESS)
    assert waiting.count() == 10 - daily_limit  # the rest wait for tomorrow
