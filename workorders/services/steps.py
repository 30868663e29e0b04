"""A work order's step pipeline: Count → Prepare → Dry-Run → Test → Send [→ Send-Continuously].

`workorder_run` is what a worker runs for a "start", "restart" or "resume" event. It takes the lease (or
returns: another worker has it), then runs the steps in order from the first that is not complete. A step
ends in one of:

- complete: the next step runs;
- interrupted: `stop_requested` was seen (within `locking.POLL_SECONDS`, in a burst pause too; during an SMTP
  exchange as soon as that message is done);
- sleeping: Send-Continuously between rounds, or the account cannot send for a while: the lease is released
  and the sweeper resumes the work order at `resume_at`;
- working, lease released: the time slice (WORKORDER_SLICE_SECONDS, under Celery's time limit) is used up and
  a "resume" event continues it; or the lease was lost and its new holder continues it;
- error (a known problem, e.g. a template that does not render) or exception (a bug): the pipeline stops.

The review gate: before Send (or Send-Continuously) runs, a work order that does not `auto_approve` and has no
approval since Test last ran stops in *awaiting approval* (lease released, Send still ready), so an operator can
look at the dry-run list and the test emails first; `lifecycle.workorder_approve` queues it again. A fresh run of
Test (or of an earlier step, through restart) clears the approval.

Send records decide what was sent, so resuming, re-running or restarting a step never sends twice.
"""

import csv
import io
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Count

from campaigns.services.ledger import attempts_exhausted
from campaigns.services.outcomes import SendOutcome
from campaigns.services.smtp import SmtpSessions
from campaigns.services.suppressions import suppressed_among
from campaigns.services.templating import RenderedEmail, TemplateRenderError, template_render
from campaigns.services.throttling import NoAccount
from emailsys import clock
from workorders.metrics import step_duration_record
from workorders.models import Contact, MailingSend, WorkOrder, WorkOrderStep
from workorders.services.live import workorder_broadcast
from workorders.services.locking import LeaseKeeper, lock_owner_new, workorder_lock_acquire, workorder_lock_release
from workorders.services.mailings import (
    NAME_MARKER,
    Addressee,
    mailing_key_sends,
    mailing_retry_due,
    mailing_send,
    mailing_send_settle,
    mailing_sends_settle_stale,
)
from workorders.services.segments import segment_contacts
from workorders.services.state import workorder_interrupt, workorder_steps_create, workorder_update
from workorders.services.stream import workorder_event_emit
from workorders.services.templating import event_template_context

logger = logging.getLogger(__name__)

Name, Status = WorkOrderStep.Name, WorkOrderStep.Status
SendState = MailingSend.State
CHUNK = 200
PROGRESS_EVERY_SECONDS = 0.5
MAX_IN_PROCESS_WAIT = 60.0  # longer waits release the lease and sleep in the database
# How a step sleeping because its account cannot send begins its message: a reset of the account's limits wakes
# those (`sweep.workorders_wake_for_account`), not a Send-Continuously sleeping between rounds.
ACCOUNT_WAIT = "account cannot send"
GATED_STEPS = (Name.SEND, Name.SEND_CONTINUOUSLY)
AWAITING_APPROVAL_MESSAGE = "awaiting approval: look at the dry-run list and the test emails, then press Approve"


def slice_seconds() -> float:
    return float(settings.WORKORDER_SLICE_SECONDS)


# --- running a step ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepEnd:
    status: str
    message: str
    resume_at: datetime | None = None  # sleeping: when to go on
    yielded: bool = False  # working, slice used up: a "resume" event continues it


@dataclass
class StepRun:
    """What a step function gets: its rows, the lease keeper (stop and loss), the slice deadline, progress."""

    work_order: WorkOrder
    step: WorkOrderStep
    keeper: LeaseKeeper
    deadline: float  # time.monotonic()
    sessions: SmtpSessions = field(default_factory=SmtpSessions)
    _saved_at: float = 0.0
    _unsaved: int = 0

    @property
    def halted(self) -> bool:
        return self.keeper.halted.is_set()

    def halt_end(self, done_message: str) -> StepEnd:
        if self.keeper.lost:
            return StepEnd(Status.WORKING, f"lease lost; its new holder continues ({done_message})", yielded=True)
        return StepEnd(Status.INTERRUPTED, f"stopped by request; {done_message}")

    def slice_left(self) -> float:
        return self.deadline - time.monotonic()

    def progress(
        self, *, done: int | None = None, total: int | None = None, message: str | None = None, force: bool = False
    ) -> None:
        """Saved and broadcast at most every PROGRESS_EVERY_SECONDS unless forced (not per email)."""
        if done is not None:
            self.step.done = done
        if total is not None:
            self.step.total = total
        if message is not None:
            self.step.message = message
        if not force and time.monotonic() - self._saved_at < PROGRESS_EVERY_SECONDS:
            return
        self._saved_at = time.monotonic()
        with transaction.atomic():
            WorkOrderStep.objects.filter(id=self.step.id).update(
                done=self.step.done, total=self.step.total, message=self.step.message[:2000], updated_at=clock.now()
            )
            workorder_broadcast(work_order_id=self.work_order.id)


def _step_set(step: WorkOrderStep, **values) -> None:
    for name, value in values.items():
        setattr(step, name, value)
    WorkOrderStep.objects.filter(id=step.id).update(**values, updated_at=clock.now())


def workorder_run(*, work_order_id: int, owner: str | None = None) -> str:
    """Runs the work order's steps while holding its lease; what happened, for logs and tests. Safe to run
    twice, concurrently too: a second caller finds the lease taken and returns "locked"."""
    owner = owner or lock_owner_new()
    if not workorder_lock_acquire(work_order_id=work_order_id, owner=owner):
        return "locked"
    outcome = "error"
    resume_event = False
    try:
        with LeaseKeeper(work_order_id=work_order_id, owner=owner) as keeper:
            outcome, resume_event = _steps_run(work_order_id, keeper)
    finally:
        with transaction.atomic():
            released = workorder_lock_release(work_order_id=work_order_id, owner=owner)
            if resume_event and released:
                workorder_event_emit(work_order_id=work_order_id, kind="resume")
            workorder_broadcast(work_order_id=work_order_id)
    return outcome


def _steps_run(work_order_id: int, keeper: LeaseKeeper) -> tuple[str, bool]:
    work_order = WorkOrder.objects.select_related("event", "audience", "account", "template").get(id=work_order_id)
    steps = workorder_steps_create(work_order=work_order)
    now = clock.now()
    if work_order.stop_requested:
        workorder_interrupt(work_order=work_order)
        return "interrupted", False
    deadline = time.monotonic() + slice_seconds()
    workorder_update(work_order=work_order, status=WorkOrder.Status.WORKING, resume_at=None)
    sessions = SmtpSessions()
    try:
        for step in steps:
            if step.status == Status.COMPLETE:
                continue
            fresh = step.status not in (Status.WORKING, Status.SLEEPING)  # a fresh run; working/sleeping go on
            if fresh and step.name in GATED_STEPS and not _send_approved(work_order):
                return _await_approval(work_order, step)
            if fresh:
                if step.name == Name.TEST:  # an approval was of the test emails of an earlier run
                    workorder_update(work_order=work_order, approved_at=None, approved_by=None)
                _step_set(
                    step,
                    status=Status.WORKING,
                    started_at=now,
                    ended_at=None,
                    done=0,
                    total=0,
                    message="",
                    runs=step.runs + 1,
                    result={},
                )
            else:
                _step_set(step, status=Status.WORKING)
            workorder_broadcast(work_order_id=work_order.id)
            run = StepRun(work_order=work_order, step=step, keeper=keeper, deadline=deadline, sessions=sessions)
            try:
                end = STEP_FUNCTIONS[step.name](run)
            except Exception as error:  # a bug: recorded on the step, the pipeline stops
                logger.exception("work order %s step %s failed", work_order.id, step.name)
                end = StepEnd(Status.EXCEPTION, f"{type(error).__name__}: {error}")
            return_value = _step_end(work_order, step, run, end)
            if return_value is not None:
                return return_value
    finally:
        sessions.close()
    workorder_update(work_order=work_order, status=WorkOrder.Status.COMPLETE)
    return "complete", False


def _send_approved(work_order: WorkOrder) -> bool:
    """The gate before Send: auto-approved, or approved since Test last ran (a fresh Test run clears it)."""
    return work_order.auto_approve or work_order.approved_at is not None


def _await_approval(work_order: WorkOrder, step: WorkOrderStep) -> tuple[str, bool]:
    """Stops before `step` (a Send): it stays ready with a message saying why; the lease is released by the caller."""
    with transaction.atomic():
        if step.status == Status.READY:
            _step_set(step, message=AWAITING_APPROVAL_MESSAGE)
        workorder_update(work_order=work_order, status=WorkOrder.Status.AWAITING_APPROVAL, resume_at=None)
    return "awaiting_approval", False


def _step_end(work_order: WorkOrder, step: WorkOrderStep, run: StepRun, end: StepEnd) -> tuple[str, bool] | None:
    """Writes the step's end; None when the pipeline goes on, else (outcome, emit a resume event)."""
    now = clock.now()
    values = {
        "status": end.status,
        "message": end.message[:2000],
        "done": step.done,
        "total": step.total,
        "result": step.result,
    }
    ended = end.status in (Status.COMPLETE, Status.ERROR, Status.EXCEPTION, Status.INTERRUPTED)
    if ended:
        values["ended_at"] = now
    with transaction.atomic():
        _step_set(step, **values)
        if ended and step.started_at is not None:
            duration = now - step.started_at
            transaction.on_commit(lambda: step_duration_record(step=step.name, duration=duration))
        if ended:
            logger.info("work order %s step %s ended: %s (%s/%s) %s", work_order.id, step.name, end.status, step.done,
                        step.total, end.message[:200], extra={"event": "workorder_step_ended",
                        "work_order": work_order.id, "step": step.name, "status": end.status})  # fmt: skip
        if end.status == Status.COMPLETE:
            return None
        if end.status == Status.INTERRUPTED:
            workorder_interrupt(work_order=work_order)
            return "interrupted", False
        if end.status == Status.SLEEPING:
            workorder_update(
                work_order=work_order, status=WorkOrder.Status.SLEEPING, resume_at=end.resume_at, swept_at=None
            )
            return "sleeping", False
        if end.yielded:
            return ("lost" if run.keeper.lost else "yielded"), not run.keeper.lost
        workorder_update(work_order=work_order, status=WorkOrder.Status.ERROR)
        return end.status, False


# --- the steps ---------------------------------------------------------------------------------------------


def _audience(work_order: WorkOrder):
    return segment_contacts(segment=work_order.audience)


def step_count(run: StepRun) -> StepEnd:
    """Eligible contacts per enabled language; those in other languages counted apart (they get nothing)."""
    work_order = run.work_order
    try:
        rows = dict(_audience(work_order).values_list("language").annotate(n=Count("id")).values_list("language", "n"))
    except ValidationError as error:
        return StepEnd(Status.ERROR, f"audience segment: {'; '.join(error.messages)}")
    by_language = {language: rows.get(language, 0) for language in work_order.languages}
    other = sum(n for language, n in rows.items() if language not in by_language)
    already = mailing_key_sends(work_order=work_order).filter(state__in=MailingSend.FINAL_STATES).count()
    run.step.result = {"by_language": by_language, "other_languages": other, "already_sent": already}
    run.step.done = run.step.total = sum(by_language.values())
    languages = ", ".join(f"{language}: {n}" for language, n in by_language.items())
    return StepEnd(
        Status.COMPLETE, f"{languages}; {other} in other languages (not sent); {already} already have this mailing"
    )


def prepared_name(*, work_order: WorkOrder, language: str) -> str:
    return f"workorders/{work_order.id}/prepared-{language}.json"


def step_prepare(run: StepRun) -> StepEnd:
    """Each language's email rendered with the event's data into storage; contacts' names go in at Send."""
    work_order = run.work_order
    context = {
        **event_template_context(event=work_order.event),
        "stage": work_order.stage,
        "salutation_by_name": work_order.salutation_by_name,
        "name": NAME_MARKER,
    }
    files = {}
    for index, language in enumerate(work_order.languages):
        template = work_order.template
        if work_order.subjects.get(language):
            template = type(template)(
                subject=work_order.subjects[language], body_text=template.body_text, body_html=template.body_html
            )
        try:
            rendered = template_render(
                template=template, context={**context, "language": language}, signature=work_order.account.signature
            )
        except TemplateRenderError as error:
            return StepEnd(Status.ERROR, f"{language}: the template does not render: {error}")
        name = prepared_name(work_order=work_order, language=language)
        default_storage.delete(name)
        files[language] = default_storage.save(name, ContentFile(json.dumps(rendered.__dict__).encode()))
        run.progress(done=index + 1, total=len(work_order.languages))
    run.step.result = {"files": files}
    return StepEnd(Status.COMPLETE, f"prepared {', '.join(files)}")


def prepared_load(*, work_order: WorkOrder) -> dict[str, RenderedEmail]:
    """What Prepare stored, per language; ValueError names what is missing."""
    prepared = {}
    for language in work_order.languages:
        name = prepared_name(work_order=work_order, language=language)
        if not default_storage.exists(name):
            raise ValueError(f"no prepared email for {language}: run Prepare first")
        with default_storage.open(name) as handle:
            prepared[language] = RenderedEmail(**json.loads(handle.read()))
    return prepared


def send_candidates(*, work_order: WorkOrder, now: datetime):
    """Eligible contacts in an enabled language who have not had this mailing (any work order) and are not in
    flight; this work order's deferred sends due now are included (retried)."""
    blocking = mailing_key_sends(work_order=work_order).exclude(mailing_retry_due(now=now) & _of(work_order))
    return (
        _audience(work_order)
        .filter(language__in=work_order.languages)
        .exclude(id__in=blocking.values("contact_id"))
        .order_by("id")
    )


def _of(work_order: WorkOrder):
    from django.db.models import Q

    return Q(work_order=work_order)


def step_dry_run(run: StepRun) -> StepEnd:
    """The list Send would use now, stored as CSV for preview; suppressed addresses marked. Nothing is sent."""
    work_order = run.work_order
    contacts = list(send_candidates(work_order=work_order, now=clock.now()).values_list("email", "name", "language"))
    suppressed = suppressed_among(emails=[email for email, _, _ in contacts])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["email", "name", "language", "suppressed"])
    for email, name, language in contacts:
        writer.writerow([email, name, language, "yes" if email in suppressed else ""])
    file_name = f"workorders/{work_order.id}/dry-run.csv"
    default_storage.delete(file_name)
    stored = default_storage.save(file_name, ContentFile(buffer.getvalue().encode()))
    count = len(contacts) - len(suppressed)
    run.step.done = run.step.total = count
    run.step.result = {
        "file": stored,
        "recipients": count,
        "suppressed": len(suppressed),
        "sample": [email for email, _, _ in contacts if email not in suppressed][:20],
    }
    return StepEnd(Status.COMPLETE, f"{count} recipients ({len(suppressed)} suppressed left out); list: {stored}")


def step_test(run: StepRun) -> StepEnd:
    """Each tester gets each language's email, recorded as a test (it never counts as the mailing)."""
    work_order = run.work_order
    if not work_order.testers:
        return StepEnd(Status.COMPLETE, "no testers")
    try:
        prepared = prepared_load(work_order=work_order)
    except ValueError as error:
        return StepEnd(Status.ERROR, str(error))
    mailing_sends_settle_stale(work_order=work_order)
    test_run = run.step.runs
    records = {
        (r.email, r.language): r
        for r in MailingSend.objects.filter(work_order=work_order, is_test=True, test_run=test_run).defer("message")
    }
    contacts = {c.email: c for c in Contact.objects.filter(email__in=[t.lower() for t in work_order.testers])}
    suppressed = suppressed_among(emails=work_order.testers)
    pairs = [(tester.lower(), language) for tester in work_order.testers for language in work_order.languages]
    outcomes: list[str] = []
    run.progress(total=len(pairs), force=True)
    for email, language in pairs:
        record = records.get((email, language))
        if record is not None and record.state != SendState.DEFERRED:
            outcomes.append(record.state)
            continue
        if email in suppressed:
            outcomes.append("suppressed")
            continue
        contact = contacts.get(email)
        addressee = Addressee(
            email=email,
            name=contact.name if contact else "",
            language=language,
            contact=contact,
            record=record,
            test_run=test_run,
        )
        end = _send_with_waits(run, addressee, prepared[language], outcomes)
        if end is not None:
            return end
        run.progress(done=len(outcomes))
    return StepEnd(Status.COMPLETE, f"test emails: {_summary(outcomes)}")


def _summary(outcomes: list[str]) -> str:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    return ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "nothing to send"


def _send_with_waits(
    run: StepRun, addressee: Addressee, prepared: RenderedEmail, outcomes: list[str]
) -> StepEnd | None:
    """One email, waiting (stop-aware) while the account cannot send; a StepEnd when the step must end here."""
    while True:
        if run.halted:
            return run.halt_end(_summary(outcomes))
        result = mailing_send(work_order=run.work_order, addressee=addressee, prepared=prepared, sessions=run.sessions)
        if result is SendOutcome.LAPSED:  # its reservation outlived its lease before the claim: reserve again
            continue
        if not isinstance(result, NoAccount):
            outcomes.append(result)
            return None
        wait = (result.retry_at - clock.now()).total_seconds()
        if wait > min(MAX_IN_PROCESS_WAIT, run.slice_left()):
            return StepEnd(
                Status.SLEEPING,
                f"{ACCOUNT_WAIT}: {result.reason}; {_summary(outcomes)}",
                resume_at=result.retry_at,
            )
        run.progress(message=f"waiting for the account: {result.reason}")
        run.keeper.wait(wait)


def _send_round(run: StepRun) -> tuple[StepEnd | None, list[str]]:
    """Every candidate once (keyset chunks), with burst pauses; (how the step must end, or None: round done)."""
    work_order = run.work_order
    try:
        prepared = prepared_load(work_order=work_order)
    except ValueError as error:
        return StepEnd(Status.ERROR, str(error)), []
    mailing_sends_settle_stale(work_order=work_order)
    now = clock.now()
    candidates = send_candidates(work_order=work_order, now=now)
    done_before = MailingSend.objects.filter(
        work_order=work_order, is_test=False, state__in=MailingSend.FINAL_STATES
    ).count()
    run.progress(done=done_before, total=done_before + candidates.count(), force=True)
    outcomes: list[str] = []
    in_burst = 0
    last_id = 0
    while True:
        chunk = list(candidates.filter(id__gt=last_id)[:CHUNK])
        if not chunk:
            return None, outcomes
        last_id = chunk[-1].id
        suppressed = suppressed_among(emails=[contact.email for contact in chunk])
        records = {
            r.contact_id: r
            for r in mailing_key_sends(work_order=work_order)
            .filter(contact__in=chunk, state=SendState.DEFERRED)
            .defer("message")
        }
        for contact in chunk:
            if run.halted:
                return run.halt_end(_summary(outcomes)), outcomes
            if run.slice_left() <= 0:
                return StepEnd(Status.WORKING, f"continuing; {_summary(outcomes)}", yielded=True), outcomes
            record = records.get(contact.id)
            addressee = Addressee(
                email=contact.email, name=contact.name, language=contact.language, contact=contact, record=record
            )
            if contact.email in suppressed or attempts_exhausted(record):
                reason = "suppressed" if contact.email in suppressed else f"gave up: {record.last_error}"
                state = SendState.SKIPPED if contact.email in suppressed else SendState.FAILED
                mailing_send_settle(work_order=work_order, addressee=addressee, state=state, reason=reason)
                outcomes.append("skipped" if state == SendState.SKIPPED else "failed")
            else:
                end = _send_with_waits(run, addressee, prepared[contact.language], outcomes)
                if end is not None:
                    return end, outcomes
                in_burst += 1
            run.progress(done=run.step.done + 1, message=f"sending: {_summary(outcomes)}")
            if work_order.burst_size and in_burst >= work_order.burst_size:
                in_burst = 0
                run.progress(
                    message=f"burst of {work_order.burst_size} sent; pausing "
                    f"{work_order.burst_pause_seconds} s; {_summary(outcomes)}",
                    force=True,
                )
                run.keeper.wait(work_order.burst_pause_seconds)


def step_send(run: StepRun) -> StepEnd:
    """Each eligible contact not yet sent this mailing key gets exactly one email, in their language."""
    end, outcomes = _send_round(run)
    return end or StepEnd(Status.COMPLETE, f"sent: {_summary(outcomes)}")


def step_send_continuously(run: StepRun) -> StepEnd:
    """Send again every interval until send_until, picking up newly eligible contacts; sleeping in between."""
    work_order = run.work_order
    while True:
        now = clock.now()
        if work_order.send_until is None or now >= work_order.send_until:
            return StepEnd(Status.COMPLETE, f"sent until {work_order.send_until:%Y-%m-%d %H:%M}; {run.step.message}")
        end, outcomes = _send_round(run)
        if end is not None:
            return end
        run.step.result = {"rounds": run.step.result.get("rounds", 0) + 1}
        next_round = clock.now() + timedelta(seconds=work_order.send_interval_seconds)
        if next_round >= work_order.send_until:
            return StepEnd(Status.COMPLETE, f"last round: {_summary(outcomes)}")
        message = f"round {run.step.result['rounds']}: {_summary(outcomes)}; next round at {next_round:%H:%M:%S}"
        wait = (next_round - clock.now()).total_seconds()
        if wait > min(MAX_IN_PROCESS_WAIT, run.slice_left()):
            return StepEnd(Status.SLEEPING, message, resume_at=next_round)
        _step_set(run.step, status=Status.SLEEPING, message=message)
        workorder_broadcast(work_order_id=work_order.id)
        if run.keeper.wait(wait):
            return run.halt_end(message)
        _step_set(run.step, status=Status.WORKING)


STEP_FUNCTIONS = {
    Name.COUNT: step_count,
    Name.PREPARE: step_prepare,
    Name.DRY_RUN: step_dry_run,
    Name.TEST: step_test,
    Name.SEND: step_send,
    Name.SEND_CONTINUOUSLY: step_send_continuously,
}
