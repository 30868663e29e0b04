"""A batch message that arrives again does nothing: real beat, dispatcher, sending workers and Redis, judged by what
the SMTP server on loopback received and when. A copy comes (a) from a duplicate publish, (b) from the dispatcher
re-claiming leads whose batch still waits in a backlog longer than the send lease, (c) from Redis redelivering a
killed worker's unacknowledged message after the visibility timeout. In each case a follow-up still goes only once,
and never before its delay."""

import socket
import time

import pytest

from campaigns.tasks import send_batch
from campaigns.tests.scenarios import (
    TaskEvents,
    TaskRun,
    campaign_scenario,
    early_follow_ups,
    mail_step,
    mails_by_recipient,
    mails_described,
    repeated_steps,
)
from campaigns.tests.test_campaign_processes import start_engine, wait_for_quiet
from emailsys.testing import RecordingSmtpServer, process_env, unique_token, wait_until, worker_argv

pytestmark = pytest.mark.django_db(transaction=True)

SEND_BATCH = "campaigns.send_batch"
DELAY = 20  # seconds between step 1 and step 2: a copy that sends at once is plainly early


def sending_worker(processes, name: str, *, concurrency: int, **env: str):
    node = f"{name}-{unique_token()}@{socket.gethostname()}"
    return processes(name, worker_argv("sending", node_name=node, concurrency=concurrency), env=process_env(**env))


def all_finished(runs: list[TaskRun]) -> bool:
    return bool(runs) and all(run.finished for run in runs)


def assert_each_step_once_and_on_time(mails, *, recipients: int, steps: int = 2) -> None:
    assert not repeated_steps(mails), f"received twice: {repeated_steps(mails)}"
    assert not early_follow_ups(mails, delay_seconds=DELAY), early_follow_ups(mails, delay_seconds=DELAY)
    by_recipient = mails_by_recipient(mails)
    assert len(by_recipient) == recipients
    assert all([mail_step(mail) for mail in got] == list(range(1, steps + 1)) for got in by_recipient.values())


@pytest.mark.timeout(120)
def test_a_duplicate_publish_of_a_batch_sends_no_follow_up_before_its_delay(processes, tmp_path) -> None:
    with RecordingSmtpServer() as smtp, TaskEvents() as events:
        campaign_scenario(smtp_port=smtp.port, accounts=1, daily_limit=100, leads=2, recipients_per_lead=2, steps=2,
                          step_delay_seconds=DELAY, name="Duplicate publish")  # fmt: skip
        start_engine(processes, tmp_path)
        wait_until(lambda: len(smtp.snapshot()) == 4, timeout=60, what="step 1 to all four recipients")
        step_one_done = smtp.snapshot()
        wait_until(lambda: all_finished(events.of(SEND_BATCH)), timeout=30, what="the step-1 batches finished")

        # The same messages the dispatcher published (lead ids, claim and all), published once more.
        originals = events.of(SEND_BATCH)
        copies = [send_batch.apply_async(args=run.args, kwargs=run.kwargs).id for run in originals]
        wait_until(lambda: all(events.runs.get(uuid) and events.runs[uuid].finished for uuid in copies),
                   timeout=30, what="the duplicates ran")  # fmt: skip
        replayed_by = time.time()
        assert replayed_by < min(mail.received_at for mail in step_one_done) + DELAY, "replayed too late to tell"
        assert not mails_described(smtp.snapshot()[4:]), "a duplicate batch sent at once"

        wait_until(lambda: len(smtp.snapshot()) >= 8, timeout=DELAY + 40, what="step 2 to all four recipients")
        wait_for_quiet(ticks=3)
        mails = smtp.snapshot()

    assert originals and all(run.args for run in originals)
    assert_each_step_once_and_on_time(mails, recipients=4)


@pytest.mark.timeout(120)
def test_a_backlog_longer_than_the_lease_sends_no_follow_up_before_its_delay(processes, tmp_path) -> None:
    lease, leads = 5, 12
    env = {"CAMPAIGN_SEND_LEASE_SECONDS": str(lease), "CAMPAIGN_SMTP_TIMEOUT": "3"}
    with RecordingSmtpServer(data_delay=1.0) as smtp, TaskEvents() as events:
        campaign_scenario(smtp_port=smtp.port, accounts=1, daily_limit=100, leads=leads, recipients_per_lead=1,
                          steps=2, step_delay_seconds=DELAY, batch_size=1, name="Backlog")  # fmt: skip
        # One sending thread, a second per message: a batch of the twelfth lead waits ~12 s in the queue.
        sending_worker(processes, "worker-sending", concurrency=1, **env)
        start_engine(processes, tmp_path, sending_workers=0, **env)

        def done_or_wrong():
            mails = smtp.snapshot()
            return early_follow_ups(mails, delay_seconds=DELAY) or repeated_steps(mails) or len(mails) >= 2 * leads

        wait_until(done_or_wrong, timeout=100, interval=0.2, what="step 2 to every lead")
        wait_for_quiet(ticks=3)
        mails = smtp.snapshot()
        waits = [run.queue_wait for run in events.of(SEND_BATCH) if run.queue_wait is not None]

    assert max(waits) > lease, f"no batch waited longer than the lease ({max(waits):.1f}s): no backlog to test"
    assert_each_step_once_and_on_time(mails, recipients=leads)


@pytest.mark.timeout(120)
def test_a_batch_redis_redelivers_after_a_kill_9_sends_nothing_twice_and_nothing_early(processes, tmp_path) -> None:
    lease = 4
    env = {"CAMPAIGN_SEND_LEASE_SECONDS": str(lease), "CAMPAIGN_SMTP_TIMEOUT": "2"}
    with RecordingSmtpServer() as smtp, TaskEvents() as events:
        campaign_scenario(smtp_port=smtp.port, accounts=1, daily_limit=100, leads=1, recipients_per_lead=2, steps=2,
                          step_delay_seconds=DELAY, name="Redelivery")  # fmt: skip
        smtp.stall_next("data")  # step 1 to the first recipient arrives; the verdict is held
        doomed = sending_worker(processes, "worker-sending-killed", concurrency=1, **env)
        start_engine(processes, tmp_path, sending_workers=0, **env)
        wait_until(smtp.stalled.is_set, timeout=60, what="the worker mid-batch, awaiting a verdict")
        (killed_batch,) = wait_until(lambda: [run for run in events.of(SEND_BATCH) if run.started], timeout=10,
                                     what="the batch's events")  # fmt: skip
        doomed.kill()  # its message stays unacknowledged in Redis
        smtp.release()

        # Another worker: the dispatcher re-claims the lead after the lease; the unknown send is never repeated,
        # the second recipient gets step 1, and step 2 becomes due DELAY seconds later.
        sending_worker(processes, "worker-sending", concurrency=1, **env)
        wait_until(lambda: len(smtp.snapshot()) == 2, timeout=lease + 30, what="step 1 to the second recipient")
        wait_until(lambda: all_finished([run for run in events.of(SEND_BATCH) if run.uuid != killed_batch.uuid]),
                   timeout=30, what="the recovering batch finished")  # fmt: skip

        # A worker with a short visibility timeout: on start, Redis gives it the killed worker's message again.
        sending_worker(processes, "worker-sending-redelivery", concurrency=1, CELERY_VISIBILITY_TIMEOUT="1", **env)

        def redelivered() -> TaskRun | None:
            run = events.runs.get(killed_batch.uuid)
            return run if run and len(run.received_by) >= 2 and run.finished else None

        again = wait_until(redelivered, timeout=30, what="the killed worker's batch redelivered and run")
        assert again.finished[-1][1] < smtp.snapshot()[-1].received_at + DELAY, "redelivered too late to tell"
        assert not mails_described(smtp.snapshot()[2:]), "the redelivered batch sent at once"

        wait_until(lambda: len(smtp.snapshot()) >= 4, timeout=DELAY + 40, what="step 2 to both recipients")
        wait_for_quiet(ticks=3)
        mails = smtp.snapshot()

    assert_each_step_once_and_on_time(mails, recipients=2)
