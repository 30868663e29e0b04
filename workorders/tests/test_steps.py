"""The step pipeline against a real SMTP server (aiosmtpd) and PostgreSQL, in this process (the lease keeper's
thread needs committed rows, hence transaction=True)."""

import email
import threading
import time
import uuid
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import connection

from campaigns.models import Suppression
from emailsys import clock
from emailsys.testing import RecordingSmtpServer, wait_until
from workorders.models import MailingSend, WorkOrder, WorkOrderStep
from workorders.services import sweep
from workorders.services.events import workorder_event_handle
from workorders.services.lifecycle import workorder_restart, workorder_stop, workorder_unlock
from workorders.services.locking import workorder_lock_acquire
from workorders.services.state import workorder_steps_create
from workorders.services.steps import workorder_run
from workorders.tests.factories import ContactFactory, WorkOrderFactory

pytestmark = pytest.mark.django_db(transaction=True)
Status = WorkOrderStep.Status


def make_work_order(smtp: RecordingSmtpServer, **overrides) -> WorkOrder:
    """Auto-approved (these tests are about sending; the review gate has its own, test_approval_gate.py)."""
    work_order = WorkOrderFactory(account__smtp_port=smtp.port, **{"auto_approve": True, **overrides})
    workorder_steps_create(work_order=work_order)
    return work_order


def steps(work_order: WorkOrder) -> dict[str, WorkOrderStep]:
    return {step.name: step for step in WorkOrderStep.objects.filter(work_order=work_order)}


def received(smtp: RecordingSmtpServer, *, testers: tuple[str, ...] = ()) -> dict[str, email.message.Message]:
    """Messages by recipient, asserting one each (testers get one per language: the last is kept)."""
    by_rcpt: dict[str, email.message.Message] = {}
    for mail in smtp.snapshot():
        (rcpt,) = mail.rcpt_tos
        assert rcpt not in by_rcpt or rcpt in testers, f"{rcpt} got two emails"
        by_rcpt[rcpt] = email.message_from_bytes(mail.content)
    return by_rcpt


def audience(en: int, fr: int, de: int = 0) -> list:
    return ([ContactFactory(language="en", name=f"Ann {n}") for n in range(en)]
            + [ContactFactory(language="fr", name=f"Fleur {n}") for n in range(fr)]
            + [ContactFactory(language="de") for _ in range(de)])  # fmt: skip


def test_the_pipeline_sends_one_email_per_contact_in_their_language_and_a_second_run_sends_nothing(smtp):
    contacts = audience(en=3, fr=2, de=1)
    work_order = make_work_order(smtp, testers=["tester@example.test"])

    assert workorder_run(work_order_id=work_order.id) == "complete"

    result = steps(work_order)
    assert {name: step.status for name, step in result.items()} == dict.fromkeys(
        ["count", "prepare", "dry_run", "test", "send"], Status.COMPLETE
    )
    assert result["count"].result == {"by_language": {"en": 3, "fr": 2}, "other_languages": 1, "already_sent": 0}
    assert result["dry_run"].result["recipients"] == 5
    by_rcpt = received(smtp, testers=("tester@example.test",))
    assert set(by_rcpt) == {c.email for c in contacts if c.language != "de"} | {"tester@example.test"}
    for contact in contacts[:5]:
        message = by_rcpt[contact.email]
        body = message.get_payload(decode=True).decode()
        assert body.startswith("Hello Ann" if contact.language == "en" else "Bonjour Fleur"), body
        assert message["Subject"] == (work_order.event.name if contact.language == "en"
                                      else f"Invitation : {work_order.event.name}")  # fmt: skip
        assert str(contact.unsubscribe_token) in message["List-Unsubscribe"]
    assert result["send"].done == result["send"].total == 5
    assert MailingSend.objects.filter(is_test=False, state="sent").count() == 5

    workorder_restart(work_order_id=work_order.id, step="send")
    assert workorder_run(work_order_id=work_order.id) == "complete"
    assert len(smtp.snapshot()) == 7  # 5 contacts + the tester in 2 languages, nothing more
    assert steps(work_order)["send"].message == "sent: nothing to send"  # none even tried


class Background:
    """`workorder_run` in a thread (its own database connection, closed at the end)."""

    def __init__(self, work_order_id: int, owner: str | None = None) -> None:
        self.result: str | None = None
        self.ended_at: float | None = None
        self.thread = threading.Thread(target=self._run, args=(work_order_id, owner), daemon=True)
        self.thread.start()

    def _run(self, work_order_id: int, owner: str | None) -> None:
        try:
            self.result = workorder_run(work_order_id=work_order_id, owner=owner)
        finally:
            self.ended_at = time.monotonic()
            connection.close()

    def join(self, timeout: float = 30) -> str | None:
        self.thread.join(timeout)
        return self.result


def send_step(work_order: WorkOrder) -> WorkOrderStep:
    return WorkOrderStep.objects.get(work_order=work_order, name="send")


def test_a_contact_sent_by_another_work_order_of_the_same_mailing_key_is_skipped(smtp):
    first, second = audience(en=2, fr=0)
    work_order = make_work_order(smtp, subjects={"en": ""})
    MailingSend.objects.create(
        work_order=make_work_order(smtp, event=work_order.event, stage=work_order.stage, subjects={"en": ""}),
        contact=first, email=first.email, event_code=work_order.event.code, sub_event="", stage=work_order.stage,
        language="en", state="sent", sent_at=work_order.created_at, message_id="<x@y>",
    )  # fmt: skip
    other_stage = make_work_order(smtp, event=work_order.event, stage="reminder", subjects={"en": ""})

    assert workorder_run(work_order_id=work_order.id) == "complete"
    assert workorder_run(work_order_id=other_stage.id) == "complete"

    rcpts = [mail.rcpt_tos[0] for mail in smtp.snapshot()]
    assert sorted(rcpts) == sorted([second.email, first.email, second.email])  # the reminder is another key
    assert steps(work_order)["count"].result["already_sent"] == 1


def test_testers_test_emails_do_not_count_as_the_mailing(smtp):
    (tester,) = audience(en=1, fr=0)
    work_order = make_work_order(smtp, testers=[tester.email])

    assert workorder_run(work_order_id=work_order.id) == "complete"

    subjects = [email.message_from_bytes(mail.content)["Subject"] for mail in smtp.snapshot()]
    assert len(subjects) == 3  # the test in en and fr, then the mailing in en
    assert MailingSend.objects.filter(is_test=True).count() == 2
    assert MailingSend.objects.get(is_test=False).contact == tester
    assert "2 sent" in steps(work_order)["test"].message


def test_a_suppressed_or_unsubscribed_contact_gets_nothing(smtp, client):
    suppressed, unsubscribing, kept = audience(en=3, fr=0)
    Suppression.objects.create(kind="address", value=suppressed.email)
    response = client.post(f"/w/u/{unsubscribing.unsubscribe_token}/", {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    unsubscribing.refresh_from_db()
    assert unsubscribing.subscribed is False
    work_order = make_work_order(smtp)

    assert workorder_run(work_order_id=work_order.id) == "complete"

    assert [mail.rcpt_tos[0] for mail in smtp.snapshot()] == [kept.email]
    assert MailingSend.objects.get(contact=suppressed).state == "skipped"


def test_bursts_pause_between_groups_of_emails(smtp):
    audience(en=5, fr=0)
    work_order = make_work_order(smtp, burst_size=2, burst_pause_seconds=1)

    assert workorder_run(work_order_id=work_order.id) == "complete"

    times = [mail.received_at for mail in smtp.snapshot()]
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert len(times) == 5
    assert gaps[1] >= 0.95 and gaps[3] >= 0.95, gaps
    assert gaps[0] < 0.5 and gaps[2] < 0.5, gaps


def test_stop_during_a_burst_pause_interrupts_within_a_second_and_restart_sends_only_the_rest(smtp):
    contacts = audience(en=5, fr=0)
    work_order = make_work_order(smtp, burst_size=2, burst_pause_seconds=60)
    run = Background(work_order.id)
    wait_until(lambda: "pausing" in send_step(work_order).message, timeout=20, what="the burst pause")

    stopped_at = time.monotonic()
    workorder_stop(work_order_id=work_order.id)

    assert run.join() == "interrupted"
    assert run.ended_at - stopped_at < 1.0
    assert send_step(work_order).status == Status.INTERRUPTED
    assert WorkOrder.objects.get(id=work_order.id).status == WorkOrder.Status.INTERRUPTED
    assert len(smtp.snapshot()) == 2

    WorkOrder.objects.filter(id=work_order.id).update(burst_size=0)
    workorder_restart(work_order_id=work_order.id, step="send")
    assert workorder_run(work_order_id=work_order.id) == "complete"
    assert sorted(mail.rcpt_tos[0] for mail in smtp.snapshot()) == sorted(c.email for c in contacts)


def test_stop_during_send_interrupts_after_the_message_in_flight_and_restart_sends_only_the_rest():
    with RecordingSmtpServer(data_delay=0.2) as smtp:
        contacts = audience(en=20, fr=0)
        work_order = make_work_order(smtp)
        run = Background(work_order.id)
        wait_until(lambda: len(smtp.snapshot()) >= 3, timeout=20, what="three emails")

        stop_time = time.time()
        workorder_stop(work_order_id=work_order.id)

        assert run.join() == "interrupted"
        sent_first = smtp.snapshot()
        assert 3 <= len(sent_first) < 20
        assert all(mail.received_at < stop_time + 1.0 for mail in sent_first)
        assert send_step(work_order).status == Status.INTERRUPTED

        workorder_restart(work_order_id=work_order.id, step="send")
        assert workorder_run(work_order_id=work_order.id) == "complete"
        rcpts = [mail.rcpt_tos[0] for mail in smtp.snapshot()]
        assert sorted(rcpts) == sorted(c.email for c in contacts)  # each exactly once


def test_a_second_worker_cannot_take_a_locked_work_order(smtp):
    audience(en=2, fr=0)
    work_order = make_work_order(smtp)
    assert workorder_lock_acquire(work_order_id=work_order.id, owner="worker-1")

    assert workorder_run(work_order_id=work_order.id, owner="worker-2") == "locked"
    assert smtp.snapshot() == []

    assert workorder_unlock(work_order_id=work_order.id)
    assert workorder_run(work_order_id=work_order.id, owner="worker-2") == "complete"
    assert len(smtp.snapshot()) == 2


def test_an_expired_lease_is_taken_over_and_the_work_resumes_without_sending_twice(smtp):
    claimed, handed_over, sent, fresh = audience(en=4, fr=0)
    work_order = make_work_order(smtp)
    assert workorder_run(work_order_id=work_order.id) == "complete"
    smtp.messages.clear()
    # A worker died during Send: its lease expired, one claim never reached SMTP, one message was handed over.
    MailingSend.objects.filter(contact__in=[claimed, handed_over, fresh]).delete()
    MailingSend.objects.filter(contact=claimed).delete()
    now = clock.now()
    common = {"work_order": work_order, "event_code": work_order.event.code, "stage": work_order.stage,
              "language": "en", "claimed_until": now + timedelta(minutes=5), "account": work_order.account}  # fmt: skip
    MailingSend.objects.create(
        contact=claimed, email=claimed.email, state="claimed", claim_token=uuid.uuid4(), **common
    )
    MailingSend.objects.create(
        contact=handed_over,
        email=handed_over.email,
        state="handed_over",
        claim_token=uuid.uuid4(),
        handed_over_at=now,
        **common,
    )
    WorkOrderStep.objects.filter(work_order=work_order, name="send").update(status=Status.WORKING)
    WorkOrder.objects.filter(id=work_order.id).update(
        status=WorkOrder.Status.WORKING, lock_owner="dead-worker", lock_acquired_at=now - timedelta(minutes=1),
        lock_expires_at=now - timedelta(seconds=1),
    )  # fmt: skip

    assert workorder_run(work_order_id=work_order.id, owner="survivor") == "complete"

    assert sorted(mail.rcpt_tos[0] for mail in smtp.snapshot()) == sorted([claimed.email, fresh.email])
    assert MailingSend.objects.get(contact=handed_over).state == "unknown"  # never resent automatically
    assert MailingSend.objects.get(contact=sent).state == "sent"
    assert WorkOrder.objects.get(id=work_order.id).lock_owner == ""


def test_the_lease_is_renewed_during_a_long_pause(smtp, settings):
    settings.WORKORDER_LEASE_SECONDS = 0.9
    audience(en=2, fr=0)
    work_order = make_work_order(smtp, burst_size=1, burst_pause_seconds=3)
    run = Background(work_order.id)
    wait_until(lambda: "pausing" in send_step(work_order).message, timeout=20, what="the burst pause")
    first_expiry = WorkOrder.objects.get(id=work_order.id).lock_expires_at

    wait_until(lambda: WorkOrder.objects.get(id=work_order.id).lock_expires_at > first_expiry + timedelta(seconds=1),
               timeout=5, what="two renewals")  # fmt: skip
    assert workorder_run(work_order_id=work_order.id, owner="intruder") == "locked"
    assert run.join() == "complete"


def test_send_continuously_sends_to_newly_eligible_contacts_and_sleeps_in_the_database_between_rounds(smtp):
    (first,) = audience(en=1, fr=0)
    work_order = make_work_order(smtp, send_continuously=True, send_until=clock.now() + timedelta(hours=1),
                                 send_interval_seconds=600)  # fmt: skip

    assert workorder_run(work_order_id=work_order.id) == "sleeping"
    step = steps(work_order)["send_continuously"]
    assert step.status == Status.SLEEPING and "next round" in step.message
    (later,) = audience(en=1, fr=0)
    assert workorder_run(work_order_id=work_order.id) == "sleeping"  # the sweeper's resume, early
    assert sorted(mail.rcpt_tos[0] for mail in smtp.snapshot()) == sorted([first.email, later.email])

    workorder_stop(work_order_id=work_order.id)
    assert steps(work_order)["send_continuously"].status == Status.INTERRUPTED


def test_the_sweeper_resumes_an_expired_lease_and_a_due_sleeper_once(smtp, monkeypatch):
    emitted = []
    monkeypatch.setattr(sweep, "workorder_resume", lambda **kwargs: emitted.append({**kwargs, "kind": "resume"}))
    now = clock.now()
    dead = make_work_order(smtp)
    WorkOrder.objects.filter(id=dead.id).update(status="working", lock_owner="dead", lock_acquired_at=now,
                                                 lock_expires_at=now - timedelta(seconds=1))  # fmt: skip
    due = make_work_order(smtp)
    WorkOrder.objects.filter(id=due.id).update(status="sleeping", resume_at=now - timedelta(seconds=1))
    alive = make_work_order(smtp)
    WorkOrder.objects.filter(id=alive.id).update(status="working", lock_owner="alive", lock_acquired_at=now,
                                                  lock_expires_at=now + timedelta(seconds=30))  # fmt: skip

    assert sorted(sweep.workorders_sweep()) == sorted([dead.id, due.id])
    assert sweep.workorders_sweep() == []  # not again within a lease
    assert {(e["work_order_id"], e["kind"]) for e in emitted} == {(dead.id, "resume"), (due.id, "resume")}


def test_the_event_handler_processes_start_restart_and_resume(smtp):
    audience(en=1, fr=0)
    work_order = make_work_order(smtp)
    event = SimpleNamespace(id=1, outbox_id=1, stream="workorder", key=str(work_order.id), kind="start", payload={})

    assert workorder_event_handle(event=event) == "complete"
    assert workorder_event_handle(event=SimpleNamespace(**{**event.__dict__, "kind": "bogus"})) == "ignored"
    assert len(smtp.snapshot()) == 1


def test_a_template_that_does_not_render_is_an_error_on_prepare(smtp):
    work_order = make_work_order(smtp, template__body_text="{{ event_name }", template__subject="x")

    assert workorder_run(work_order_id=work_order.id) == "error"

    prepare = steps(work_order)["prepare"]
    assert prepare.status == Status.ERROR and "does not render" in prepare.message
    assert steps(work_order)["send"].status == Status.READY


def test_a_contact_whose_address_no_message_can_carry_fails_alone_and_the_send_goes_on(smtp):
    contacts = audience(en=2, fr=0) + [ContactFactory(language="en", email="amélie@example.test")]
    work_order = make_work_order(smtp)

    assert workorder_run(work_order_id=work_order.id) == "complete"

    assert sorted(mail.rcpt_tos[0] for mail in smtp.snapshot()) == sorted(c.email for c in contacts[:2])
    failed = MailingSend.objects.get(contact=contacts[2])
    assert failed.state == "failed" and failed.last_error.startswith("cannot build the message")
    assert send_step(work_order).status == Status.COMPLETE
