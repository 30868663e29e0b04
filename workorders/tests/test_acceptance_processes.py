"""Issue 4's acceptance, across real processes: PostgreSQL, Redis, moto's SQS server, `manage.py sqs_bridge`
processes, Celery workers of the `workorders` pool, beat, and an aiosmtpd server (in this process) recording what
it accepts and when. SQS is configured everywhere, so the outbox never dispatches straight to Celery: every
work-order event goes outbox → moto queue → bridge → ReceivedEvent → worker."""

import email
import os
import re
import socket
import time
from collections import Counter
from pathlib import Path

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from emailsys.models import OutboxEvent, ReceivedEvent
from emailsys.ops_clients import ops_redis
from emailsys.sqs import sqs_client, sqs_queues_ensure
from emailsys.testing import (
    CapturedMail,
    ManagedProcess,
    RecordingSmtpServer,
    beat_argv,
    process_env,
    sqs_bridge_argv,
    unique_token,
    wait_until,
    worker_argv,
)
from workorders.models import Contact, MailingSend, WorkOrder, WorkOrderStep
from workorders.services.lifecycle import workorder_approve, workorder_restart, workorder_start, workorder_stop
from workorders.services.state import workorder_steps_create
from workorders.services.stream import STREAM, workorder_event_emit
from workorders.tests.factories import WorkOrderFactory

pytestmark = pytest.mark.django_db(transaction=True)
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
Status = WorkOrderStep.Status


@pytest.fixture
def stack(moto_endpoint, settings, monkeypatch, processes, tmp_path):
    """A fresh FIFO queue (+ dead-letter queue) on the session's moto server, this process publishing to it, an
    empty Redis database, and `stack.env` for project processes (SQS on, shared media, short bridge polls)."""
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    ops_redis().flushdb()  # this test's Redis database: no task left over from an earlier run
    name = f"wo-{unique_token()}.fifo"
    settings.SQS_ENDPOINT_URL, settings.SQS_QUEUE_NAME, settings.SQS_QUEUE_URL = moto_endpoint, name, ""
    url, _ = sqs_queues_ensure(name=name, max_receive_count=3, visibility_timeout=30)
    env = process_env(
        SQS_ENDPOINT_URL=moto_endpoint,
        SQS_QUEUE_NAME=name,
        SQS_WAIT_SECONDS="1",
        MEDIA_ROOT=str(tmp_path / "media"),
        **AWS_ENV,
    )
    return Stack(processes=processes, env=env, queue_url=url, tmp_path=tmp_path)


class Stack:
    def __init__(self, *, processes, env: dict[str, str], queue_url: str, tmp_path: Path) -> None:
        self.processes, self.env, self.queue_url, self.tmp_path = processes, env, queue_url, tmp_path
        self.host = socket.gethostname()

    def worker(self, name: str, *, concurrency: int = 2, **env: str) -> ManagedProcess:
        argv = worker_argv("workorders", node_name=f"{name}-{unique_token()}@{self.host}", concurrency=concurrency)
        return self.processes(name, argv, env={**self.env, **env})

    def bridge(self, name: str = "bridge") -> ManagedProcess:
        return self.processes(name, sqs_bridge_argv(), env=self.env)

    def beat(self, **env: str) -> ManagedProcess:
        return self.processes("beat", beat_argv(self.tmp_path), env={**self.env, **env})

    def queue_counts(self) -> tuple[int, int]:
        """(visible, in flight) messages of the work orders' SQS queue."""
        attributes = sqs_client().get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def worker_ready(worker: ManagedProcess) -> bool:
    return " ready." in worker.log_path.read_text(errors="replace") if worker.log_path.exists() else False


def contacts_create(*, en: int, fr: int, prefix: str = "c", **fields) -> list[Contact]:
    contacts = [Contact(email=f"{prefix}-en{n}@example.test", name=f"Ann {n}", language="en", **fields)
                for n in range(en)]  # fmt: skip
    contacts += [Contact(email=f"{prefix}-fr{n}@example.test", name=f"Fleur {n}", language="fr", **fields)
                 for n in range(fr)]  # fmt: skip
    return Contact.objects.bulk_create(contacts)


def work_order_create(smtp: RecordingSmtpServer, **overrides) -> WorkOrder:
    """Auto-approved unless overridden: only the first test goes through the review gate."""
    work_order = WorkOrderFactory(account__smtp_port=smtp.port, **{"auto_approve": True, **overrides})
    workorder_steps_create(work_order=work_order)
    return work_order


def steps_of(work_order: WorkOrder) -> dict[str, WorkOrderStep]:
    return {step.name: step for step in WorkOrderStep.objects.filter(work_order=work_order)}


def status_of(work_order: WorkOrder) -> str:
    return WorkOrder.objects.values_list("status", flat=True).get(id=work_order.id)


def settled(work_order: WorkOrder, *, status: str = WorkOrder.Status.COMPLETE) -> bool:
    """In `status` (complete), its lease released and every event of it finished (the status is set before the
    event ends)."""
    row = WorkOrder.objects.values_list("status", "lock_owner").get(id=work_order.id)
    unfinished = events_of(work_order).exclude(state__in=ReceivedEvent.FINISHED).exists()
    return row == (status, "") and not unfinished


def rcpts(mails: list[CapturedMail]) -> Counter:
    return Counter(rcpt for mail in mails for rcpt in mail.rcpt_tos)


def events_of(work_order: WorkOrder):
    return ReceivedEvent.objects.filter(stream=STREAM, key=str(work_order.id))


def assert_in_language(mail: CapturedMail, *, language: str, event_name: str) -> None:
    message = email.message_from_bytes(mail.content)
    body = message.get_payload(decode=True).decode()
    if language == "fr":
        assert message["Subject"] == f"Invitation : {event_name}", message["Subject"]
        assert body.startswith("Bonjour"), body
    else:
        assert message["Subject"] == event_name, message["Subject"]
        assert body.startswith("Hello"), body


@pytest.mark.timeout(150)
def test_500_contacts_in_two_languages_run_the_whole_pipeline_through_sqs_stopping_for_approval_before_send(
    stack, admin_user
) -> None:
    contacts = contacts_create(en=250, fr=250)
    contacts_create(en=0, fr=4, prefix="gone", subscribed=False)  # unsubscribed: in no segment
    Contact.objects.bulk_create([Contact(email=f"de{n}@example.test", language="de") for n in range(4)])
    testers = ["tester1@example.test", "tester2@example.test"]
    with RecordingSmtpServer() as smtp:
        work_order = work_order_create(smtp, testers=testers, auto_approve=False)
        workers = [stack.worker("w1"), stack.worker("w2")]
        wait_until(lambda: all(worker_ready(w) for w in workers), timeout=60, what="workers ready")

        workorder_start(work_order_id=work_order.id)
        # Workers run, no bridge yet: the start event waits in the moto queue and nothing else carries it.
        (outbox,) = OutboxEvent.objects.filter(stream=STREAM, key=str(work_order.id))
        assert outbox.kind == "start" and outbox.published_at is not None
        assert stack.queue_counts() == (1, 0)
        assert not ReceivedEvent.objects.exists()
        assert status_of(work_order) == WorkOrder.Status.QUEUED

        bridge = stack.bridge()
        # The review gate: Test's emails went out, nothing real did; the lease is released, Send still ready.
        wait_until(lambda: settled(work_order, status=WorkOrder.Status.AWAITING_APPROVAL), timeout=120,
                   interval=0.2, what="the work order awaiting approval")  # fmt: skip
        assert set(rcpts(smtp.snapshot())) == set(testers)
        assert MailingSend.objects.filter(is_test=False).count() == 0
        gated = steps_of(work_order)["send"]
        assert gated.status == Status.READY and gated.message.startswith("awaiting approval"), gated.message

        approved = workorder_approve(work_order_id=work_order.id, approved_by=admin_user)
        assert (approved.status, approved.approved_by) == (WorkOrder.Status.QUEUED, admin_user)
        wait_until(lambda: settled(work_order), timeout=120, interval=0.3,
                   what="the work order complete")  # fmt: skip
        mails = smtp.snapshot()

    start_event, approve_event = events_of(work_order).order_by("id")
    assert (start_event.outbox_id, start_event.via, start_event.state) == (
        outbox.id, ReceivedEvent.Via.SQS, ReceivedEvent.State.DONE,
    )  # fmt: skip
    assert (approve_event.kind, approve_event.via, approve_event.state) == (
        "approve", ReceivedEvent.Via.SQS, ReceivedEvent.State.DONE,
    )  # fmt: skip
    last_test_email = max(m.received_at for m in mails if m.rcpt_tos[0] in testers)
    first_real_email = min(m.received_at for m in mails if m.rcpt_tos[0] not in testers)
    assert first_real_email > last_test_email, "the real emails only after Approve"
    assert f"outbox {outbox.id} workorder:{work_order.id} start recorded" in bridge.log(400)
    assert stack.queue_counts() == (0, 0), "the message was deleted once recorded"

    by_rcpt = rcpts(mails)
    eligible = {contact.email: contact for contact in contacts}
    assert set(by_rcpt) == set(eligible) | set(testers)
    assert {rcpt: n for rcpt, n in by_rcpt.items() if rcpt in eligible and n != 1} == {}, "one email each"
    assert by_rcpt["tester1@example.test"] == by_rcpt["tester2@example.test"] == 2  # one per language
    for mail in mails:
        (rcpt,) = mail.rcpt_tos
        if rcpt in eligible:
            assert_in_language(mail, language=eligible[rcpt].language, event_name=work_order.event.name)
    tester_subjects = sorted(email.message_from_bytes(m.content)["Subject"] for m in mails if m.rcpt_tos[0] in testers)
    name = work_order.event.name
    assert tester_subjects == sorted([f"[TEST] {name}"] * 2 + [f"[TEST] Invitation : {name}"] * 2)  # marked as tests
    assert MailingSend.objects.filter(is_test=True, state="sent").count() == 4
    assert MailingSend.objects.filter(is_test=False, state="sent").count() == 500

    steps = steps_of(work_order)
    assert {step: steps[step].status for step in steps} == dict.fromkeys(
        ["count", "prepare", "dry_run", "test", "send"], Status.COMPLETE
    )
    assert steps["count"].message == "en: 250, fr: 250; 4 in other languages (not sent); 0 already have this mailing"
    assert steps["prepare"].message == "prepared en, fr"
    assert steps["dry_run"].message.startswith("500 recipients (0 suppressed left out); list: ")
    assert steps["test"].message == "test emails: 4 sent"
    assert steps["send"].message == "sent: 500 sent"
    assert (steps["send"].done, steps["send"].total) == (500, 500)


@pytest.mark.timeout(150)
def test_stop_during_send_interrupts_within_a_second_and_restart_sends_only_the_rest(stack) -> None:
    contacts = contacts_create(en=40, fr=40)
    with RecordingSmtpServer(data_delay=0.05) as smtp:
        work_order = work_order_create(smtp)
        stack.bridge()
        stack.worker("w1")
        workorder_start(work_order_id=work_order.id)
        wait_until(lambda: len(smtp.snapshot()) >= 15, timeout=60, what="15 emails sent")

        stop_requested_at = time.time()
        workorder_stop(work_order_id=work_order.id)
        wait_until(lambda: steps_of(work_order)["send"].status == Status.INTERRUPTED, timeout=10, interval=0.05,
                   what="send interrupted")  # fmt: skip
        interrupted_within = time.time() - stop_requested_at
        first_run = smtp.snapshot()
        send = steps_of(work_order)["send"]
        wait_until(lambda: WorkOrder.objects.get(id=work_order.id).lock_owner == "", timeout=10, what="lock released")

        assert status_of(work_order) == WorkOrder.Status.INTERRUPTED
        assert send.message.startswith("stopped by request; "), send.message
        assert 15 <= len(first_run) < len(contacts), "stopped after some but not all"
        late = [mail.received_at - stop_requested_at for mail in first_run if mail.received_at > stop_requested_at + 1]
        assert late == [], f"DATA accepted more than 1 s after the stop request: {late}"
        assert interrupted_within < 2.0, f"the step went interrupted {interrupted_within:.2f}s after the stop"

        workorder_restart(work_order_id=work_order.id, step="send")
        wait_until(lambda: settled(work_order), timeout=60, interval=0.2,
                   what="the restarted work order complete")  # fmt: skip
        mails = smtp.snapshot()

    by_rcpt = rcpts(mails)
    assert by_rcpt == Counter(contact.email for contact in contacts), "every contact exactly once over both runs"
    first = {mail.rcpt_tos[0] for mail in first_run}
    assert not first & {mail.rcpt_tos[0] for mail in mails[len(first_run) :]}, "the restart resent someone"
    assert steps_of(work_order)["send"].message == f"sent: {len(contacts) - len(first_run)} sent"
    kinds = list(events_of(work_order).order_by("outbox_id").values_list("kind", "via", "state"))
    assert kinds == [("start", "sqs", "done"), ("restart", "sqs", "done")]


def sweep_every_second() -> None:
    """Beat's work-order sweep each second. Transactional tests flush every table, migration-made rows included,
    so the periodic task is (re)created here."""
    schedule = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)[0]
    PeriodicTask.objects.update_or_create(
        name="workorders: sweep",
        defaults={"task": "workorders.sweep", "interval": schedule, "queue": "workorders", "enabled": True},
    )


def holder_of(work_order: WorkOrder, workers: list[ManagedProcess]) -> ManagedProcess | None:
    """The worker whose pool process holds the lease: lock owners are "host:pid:random", and a worker's pool
    processes are in its process group."""
    owner = WorkOrder.objects.values_list("lock_owner", flat=True).get(id=work_order.id)
    if not owner:
        return None
    pid = int(owner.split(":")[1])
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return None
    return next((worker for worker in workers if worker.popen.pid == group and worker.alive), None)


@pytest.mark.timeout(150)
def test_kill_9_of_the_lease_holder_during_send_is_taken_over_by_the_other_worker_without_a_second_email(
    stack,
) -> None:
    lease = 5
    contacts = contacts_create(en=30, fr=30)
    sweep_every_second()
    with RecordingSmtpServer() as smtp:
        work_order = work_order_create(smtp)
        stack.bridge()
        workers = [stack.worker(name, concurrency=1, WORKORDER_LEASE_SECONDS=str(lease)) for name in ("w1", "w2")]
        stack.beat(WORKORDER_LEASE_SECONDS=str(lease))
        wait_until(lambda: all(worker_ready(w) for w in workers), timeout=60, what="workers ready")
        workorder_start(work_order_id=work_order.id)
        wait_until(lambda: len(smtp.snapshot()) >= 10, timeout=60, what="10 emails sent")

        smtp.stall_next("data")  # the next message arrives whole; the reply to its final dot is held
        wait_until(smtp.stalled.is_set, timeout=30, what="a message in flight")
        holder = holder_of(work_order, workers)
        assert holder is not None, "the lease holder is one of the two workers"
        dead_owner = WorkOrder.objects.get(id=work_order.id).lock_owner
        holder.kill()
        killed_at = time.monotonic()
        smtp.release()
        survivor = next(worker for worker in workers if worker is not holder)

        wait_until(lambda: holder_of(work_order, [survivor]) is survivor, timeout=lease + 10, interval=0.1,
                   what=f"the survivor holding the lease within {lease} + 10 s")  # fmt: skip
        taken_over_after = time.monotonic() - killed_at
        wait_until(lambda: settled(work_order), timeout=60, interval=0.2,
                   what="the work order complete")  # fmt: skip
        mails = smtp.snapshot()

    assert WorkOrder.objects.get(id=work_order.id).lock_owner != dead_owner
    assert taken_over_after >= lease - 1, f"taken over after {taken_over_after:.1f}s, before the lease expired?"
    by_rcpt = rcpts(mails)
    assert by_rcpt == Counter(contact.email for contact in contacts), "exactly one email per eligible contact"
    states = Counter(MailingSend.objects.filter(is_test=False).values_list("state", flat=True))
    assert states == Counter(sent=len(contacts) - 1, unknown=1), "the one in flight at the kill is unknown, not resent"
    unknown = MailingSend.objects.get(state="unknown")
    assert by_rcpt[unknown.email] == 1
    assert steps_of(work_order)["send"].status == Status.COMPLETE
    (event,) = events_of(work_order)
    assert (event.via, event.state, event.attempts) == ("sqs", "done", 2), "the dead worker's event run again"


def intervals_overlap(a: ReceivedEvent, b: ReceivedEvent) -> bool:
    return a.started_at < b.finished_at and b.started_at < a.finished_at


def busy_runs(worker: ManagedProcess, *, at_least: float) -> int:
    """run_event tasks this worker finished that took at least `at_least` seconds (real sending, not a no-op)."""
    runtimes = re.findall(r"Task emailsys\.run_event\[[^\]]+\] succeeded in ([\d.]+)s", worker.log_path.read_text())
    return sum(float(runtime) >= at_least for runtime in runtimes)


@pytest.mark.timeout(180)
def test_two_bridges_and_two_workers_run_each_work_orders_events_one_at_a_time_in_outbox_order(stack) -> None:
    first_contacts = contacts_create(en=12, fr=12)
    with RecordingSmtpServer(data_delay=0.05) as smtp:
        work_orders = [work_order_create(smtp) for _ in range(4)]  # four events, four accounts
        for name in ("bridge1", "bridge2"):
            stack.bridge(name)
        # A one-second slice: a long Send yields and continues with a "resume" event of its own.
        workers = [stack.worker(name, WORKORDER_SLICE_SECONDS="1") for name in ("w1", "w2")]
        # Interleaved: each work order's start, then a resume as a sweeper would emit, round by round.
        for work_order in work_orders:
            workorder_start(work_order_id=work_order.id)
        for work_order in work_orders:
            workorder_event_emit(work_order_id=work_order.id, kind="resume")

        def quiet() -> bool:
            """Every work order complete and unlocked, every event published, received and finished."""
            done = WorkOrder.objects.filter(status=WorkOrder.Status.COMPLETE, lock_owner="").count() == len(work_orders)
            unfinished = ReceivedEvent.objects.exclude(state__in=ReceivedEvent.FINISHED).exists()
            return done and not unfinished and ReceivedEvent.objects.count() == OutboxEvent.objects.count()

        wait_until(quiet, timeout=90, interval=0.3, what="all four work orders complete, every event finished")
        later_contacts = contacts_create(en=4, fr=4, prefix="late")
        for work_order in reversed(work_orders):
            workorder_restart(work_order_id=work_order.id, step="send")
            workorder_event_emit(work_order_id=work_order.id, kind="resume")
        wait_until(quiet, timeout=90, interval=0.3, what="the restarted work orders complete, every event finished")
        mails = smtp.snapshot()

    everyone = Counter(contact.email for contact in first_contacts + later_contacts)
    accounts = {work_order.account.email: work_order for work_order in work_orders}
    for account, work_order in accounts.items():
        sent = Counter(rcpt for mail in mails if mail.mail_from == account for rcpt in mail.rcpt_tos)
        assert sent == everyone, f"work order {work_order.id}: not exactly one email per contact"

    all_events = list(ReceivedEvent.objects.all())
    assert {(event.via, event.state) for event in all_events} == {("sqs", "done")}
    for work_order in work_orders:
        events = sorted(events_of(work_order), key=lambda event: event.started_at)
        outbox_ids = [event.outbox_id for event in events]
        assert outbox_ids == sorted(outbox_ids), f"work order {work_order.id}: events ran out of outbox order"
        kinds = [event.kind for event in events]
        assert kinds[:2] == ["start", "resume"] and "restart" in kinds, kinds
        assert len(kinds) > 3, f"work order {work_order.id}: expected its own slice resumes too, got {kinds}"
        for before, after in zip(events, events[1:], strict=False):
            assert before.finished_at <= after.started_at, (
                f"work order {work_order.id}: events {before.outbox_id} and {after.outbox_id} overlap"
            )
    assert any(intervals_overlap(a, b) for a in all_events for b in all_events if a.key != b.key), (
        "different work orders never ran at the same time"
    )
    assert all(busy_runs(worker, at_least=0.3) >= 1 for worker in workers), "both workers should have sent emails"
