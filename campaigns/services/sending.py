"""Sending a lead's next email exactly once.

Per call, a lead gets at most one SMTP delivery: its next recipient on its current step. The send record is
claimed and committed (with its Message-ID and the rendered message) before SMTP; no transaction is open
during SMTP. The record's state after a crash says what happened:

- CLAIMED, lease expired: the content never left (HANDED_OVER is committed before it does) → retried.
- HANDED_OVER, lease expired: the content may have left → UNKNOWN, never retried automatically; it counts
  against the account's limit and the lead moves on. An operator resolves it in the admin.
"""

import logging
import smtplib
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db import connection as db_connection

from campaigns.models import Activity, Campaign, Lead, Recipient, SenderAccount, SendRecord, SequenceStep
from campaigns.services.activities import activity_record
from campaigns.services.operations import suppression_add, suppression_matches
from campaigns.services.smtp import DeliveryResult, Outcome, smtp_classify_connect_error, smtp_connect, smtp_deliver
from campaigns.services.templating import TemplateRenderError, message_build, message_id_new, step_render
from campaigns.services.throttling import (
    NoAccount,
    Reservation,
    account_local_day,
    account_record_failure,
    account_reserve,
    reservation_commit,
    reservation_release,
    send_lease,
    usage_give_back,
)
from campaigns.services.windows import window_next_open
from emailsys import clock

logger = logging.getLogger(__name__)

MAX_DEFERRALS = 8
State = SendRecord.State


@dataclass
class SmtpSessions:
    """Open SMTP connections per account, reused across leads and batches by one worker thread.

    A connection idle for a while is checked with NOOP before reuse (servers drop idle clients); `close_idle()`
    hangs up on accounts not used recently.
    """

    connections: dict[int, smtplib.SMTP] = field(default_factory=dict)
    last_used: dict[int, float] = field(default_factory=dict)
    check_after_seconds: float = 5.0

    def get(self, account: SenderAccount) -> smtplib.SMTP:
        connection = self.connections.get(account.id)
        if connection is not None and connection.sock is not None:
            idle = time.monotonic() - self.last_used.get(account.id, 0.0)
            if idle > self.check_after_seconds and not _answers_noop(connection):
                connection = None
        if connection is None or connection.sock is None:
            connection = smtp_connect(account)
            self.connections[account.id] = connection
        self.last_used[account.id] = time.monotonic()
        return connection

    def close_idle(self, *, max_idle_seconds: float) -> None:
        now = time.monotonic()
        for account_id in [a for a, used in self.last_used.items() if now - used > max_idle_seconds]:
            _hang_up(self.connections.pop(account_id, None))
            self.last_used.pop(account_id, None)

    def close(self) -> None:
        for connection in self.connections.values():
            _hang_up(connection)
        self.connections.clear()
        self.last_used.clear()


def _answers_noop(connection: smtplib.SMTP) -> bool:
    try:
        return connection.noop()[0] == 250
    except (smtplib.SMTPException, OSError):
        connection.close()
        return False


def _hang_up(connection: smtplib.SMTP | None) -> None:
    if connection is None:
        return
    try:
        connection.quit()
    except (smtplib.SMTPException, OSError):
        connection.close()


def db_connection_release() -> None:
    """With a connection pool, gives this thread's connection back while it waits on SMTP (the next query takes
    one again). Without a pool it does nothing: closing would mean a new connection per email."""
    if settings.DB_POOL_MAX_SIZE and not db_connection.in_atomic_block:
        db_connection.close()


def unsubscribe_url(recipient: Recipient) -> str:
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}/u/{recipient.unsubscribe_token}/"


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(3600, 60 * 2 ** max(0, attempts - 1)))


def _thread_references(recipient: Recipient, step: SequenceStep) -> tuple[list[str], str | None]:
    """Message-IDs of this recipient's earlier emails in the campaign, oldest first, and the last subject."""
    earlier = list(
        SendRecord.objects.filter(recipient=recipient, step__order__lt=step.order, state=State.SENT)
        .order_by("step__order")
        .values_list("message_id", "subject")
    )
    return [message_id for message_id, _ in earlier if message_id], (earlier[-1][1] if earlier else None)


def _cross_campaign_contact(recipient: Recipient, campaign: Campaign, now: datetime) -> bool:
    days = settings.CAMPAIGN_CROSS_CONTACT_DAYS
    if not days:
        return False
    return (
        SendRecord.objects.filter(
            recipient__email__iexact=recipient.email,
            campaign__status=Campaign.Status.ACTIVE,
            state=State.SENT,
            sent_at__gte=now - timedelta(days=days),
        )
        .exclude(campaign=campaign)
        .exists()
    )


@dataclass(frozen=True)
class NextRecipient:
    recipient: Recipient
    record: SendRecord | None


@dataclass
class StepState:
    """A lead's recipients and their send records for one step, loaded once per lead and kept up to date in
    memory by this worker (the lead is claimed, so no one else moves it meanwhile)."""

    recipients: list[Recipient]
    records: dict[int, SendRecord]


def _step_state(lead: Lead, step: SequenceStep) -> StepState:
    return StepState(
        recipients=list(lead.recipients.order_by("position")),
        records={record.recipient_id: record for record in SendRecord.objects.filter(lead=lead, step=step)},
    )


def _next_recipient(lead: Lead, step: SequenceStep, now: datetime, state: StepState) -> NextRecipient | datetime | None:
    """The recipient to send to now, or the time to look again (one is waiting), or None (step is done).

    Also settles records whose worker died: CLAIMED is given back for a retry, HANDED_OVER becomes UNKNOWN.
    """
    for recipient in state.recipients:
        record = state.records.get(recipient.id)
        if record is None:
            return NextRecipient(recipient, None)
        if record.state in SendRecord.FINAL_STATES:
            continue
        if record.state == State.DEFERRED:
            if record.next_attempt_at and record.next_attempt_at > now:
                return record.next_attempt_at
            return NextRecipient(recipient, record)
        if record.claimed_until and record.claimed_until > now:
            return record.claimed_until  # in flight in another worker
        if record.state == State.HANDED_OVER:
            _settle_as_unknown(record, now, "the worker stopped after handing the message to SMTP")
            record.state = State.UNKNOWN
            continue
        recovered = _recover_stale_claim(record, now)  # CLAIMED, lease expired: it never reached the server
        if recovered is None:
            return now  # recovered concurrently; look again
        state.records[recipient.id] = recovered
        return NextRecipient(recipient, recovered)
    return None


def _recover_stale_claim(record: SendRecord, now: datetime) -> SendRecord | None:
    """A dead worker's claim becomes DEFERRED (due now) and its reservation is given back, exactly once: the
    conditional update on the old claim token decides which caller does it."""
    with transaction.atomic():
        recovered = SendRecord.objects.filter(id=record.id, state=State.CLAIMED, claim_token=record.claim_token).update(
            state=State.DEFERRED, next_attempt_at=now, claim_token=None, claimed_until=None,
            last_error="the worker stopped before handing the message to SMTP; nothing was sent",
        )  # fmt: skip
        if not recovered:
            return None
        if record.account_id and record.claimed_until:
            claimed_at = record.claimed_until - send_lease()
            day = account_local_day(SenderAccount.objects.get(id=record.account_id), claimed_at)
            usage_give_back(account_id=record.account_id, campaign_id=record.campaign_id, day=day)
    return SendRecord.objects.get(id=record.id)


def _settle_as_unknown(record: SendRecord, now: datetime, reason: str) -> None:
    """It counts against the account's limit (it may have been delivered); the account's lease ran out with it."""
    updated = SendRecord.objects.filter(id=record.id, state=State.HANDED_OVER, claim_token=record.claim_token).update(
        state=State.UNKNOWN, last_error=reason, claim_token=None, claimed_until=None
    )
    if updated:
        _record_activity(
            record,
            kind=Activity.Kind.UNKNOWN,
            message=f"outcome unknown: {reason}",
            detail={"send_record": record.id, "message_id": record.message_id},
        )


def _record_activity(record: SendRecord, *, kind: str, message: str, detail: dict) -> None:
    """An activity about one send record, linked to everything the record names."""
    activity_record(
        kind=kind,
        campaign=record.campaign_id,
        lead=record.lead_id,
        recipient=record.recipient_id,
        account=record.account_id,
        step_order=record.step.order,
        message=message,
        detail=detail,
    )


def _record_final(
    *, recipient: Recipient, step: SequenceStep, record: SendRecord | None, state: str, reason: str, kind: str
) -> None:
    """A recipient that is settled without SMTP (skipped, template error): one record, one activity."""
    lead = recipient.lead
    values = {"state": state, "last_error": reason, "claim_token": None, "claimed_until": None}
    if record is None:
        try:
            with transaction.atomic():
                SendRecord.objects.create(
                    campaign_id=lead.campaign_id, lead=lead, recipient=recipient, step=step, **values
                )
        except IntegrityError:
            return  # settled by a concurrent worker
    else:
        SendRecord.objects.filter(id=record.id, updated_at=record.updated_at).update(**values)
    activity_record(
        kind=kind, campaign=lead.campaign_id, lead=lead, recipient=recipient, step_order=step.order, message=reason
    )


def _lead_advance(
    lead: Lead, step: SequenceStep, now: datetime, steps: list[SequenceStep], last_sent_at: datetime | None = None
) -> None:
    """Every recipient of the step is settled: next step at last send + its delay, moved into the window."""
    next_step = next((candidate for candidate in steps if candidate.order > step.order), None)
    activity_record(kind=Activity.Kind.STEP_COMPLETED, campaign=lead.campaign_id, lead=lead, step_order=step.order)
    sent = {"last_sent_at": last_sent_at} if last_sent_at else {}
    if next_step is None:
        Lead.objects.filter(id=lead.id).update(state=Lead.State.FINISHED, next_due_at=None, **sent)
        campaign_complete_if_done(campaign_id=lead.campaign_id)
        return
    base = last_sent_at or lead.last_sent_at or now
    due = window_next_open(at=base + timedelta(seconds=next_step.delay_seconds), campaign=lead.campaign)
    Lead.objects.filter(id=lead.id).update(current_step=next_step.order, next_due_at=due, **sent)


def campaign_complete_if_done(*, campaign_id: int) -> bool:
    """An active campaign whose every lead finished or stopped is completed."""
    if Lead.objects.filter(campaign_id=campaign_id, state=Lead.State.IN_PROGRESS).exists():
        return False
    changed = Campaign.objects.filter(id=campaign_id, status=Campaign.Status.ACTIVE).update(
        status=Campaign.Status.COMPLETED
    )
    if changed:
        activity_record(
            kind=Activity.Kind.STATUS_CHANGED,
            campaign=campaign_id,
            message="campaign completed: every lead finished or stopped",
            detail={"from": "active", "to": "completed"},
        )
    return bool(changed)


def _lead_due(lead: Lead, at: datetime) -> None:
    Lead.objects.filter(id=lead.id, state=Lead.State.IN_PROGRESS).update(next_due_at=at)


def lead_process(*, lead_id: int, sessions: SmtpSessions, account_filter: int | None = None) -> str:
    """Settles the lead's next recipient (at most one SMTP delivery) and sets when to look at it again.

    Safe to run twice, concurrently too: the (recipient, step) send record is claimed atomically, so only
    one caller ever hands a message to SMTP.
    """
    for _ in range(100):  # skips and template errors settle a recipient without SMTP; go on to the next
        now = clock.now()
        lead = Lead.objects.select_related("campaign").filter(id=lead_id).first()
        if lead is None or lead.state != Lead.State.IN_PROGRESS:
            return "not in progress"
        campaign = lead.campaign
        if campaign.status != Campaign.Status.ACTIVE:
            _lead_due(lead, now)  # picked up again when the campaign is resumed
            return "campaign not active"
        if campaign.ends_at and campaign.ends_at <= now:
            return "campaign ended"
        steps = list(campaign.steps.select_related("template").order_by("order"))
        step = next((candidate for candidate in steps if candidate.order == lead.current_step), None)
        if step is None:
            Lead.objects.filter(id=lead.id).update(state=Lead.State.FINISHED, next_due_at=None)
            campaign_complete_if_done(campaign_id=campaign.id)
            return "no such step: finished"
        opens = window_next_open(at=now, campaign=campaign)
        if opens > now:
            _lead_due(lead, opens)
            return "outside the send window"
        state = _step_state(lead, step)
        choice = _next_recipient(lead, step, now, state)
        if choice is None:
            _lead_advance(lead, step, now, steps)
            return "step completed"
        if isinstance(choice, datetime):
            _lead_due(lead, choice)
            return "waiting"
        recipient, record = choice.recipient, choice.record
        if record and record.state == State.DEFERRED and record.attempts >= MAX_DEFERRALS:
            _record_final(
                recipient=recipient,
                step=step,
                record=record,
                state=State.FAILED,
                reason=f"gave up after {record.attempts} attempts: {record.last_error}",
                kind=Activity.Kind.FAILED,
            )
            continue
        skip_reason = _skip_reason(recipient, campaign, now)
        if skip_reason:
            _record_final(
                recipient=recipient,
                step=step,
                record=record,
                state=State.SKIPPED,
                reason=skip_reason,
                kind=Activity.Kind.SKIPPED,
            )
            continue
        exclude = (record.account_id,) if record and record.account_id and record.state == State.DEFERRED else ()
        reservation = account_reserve(
            campaign_id=campaign.id, now=now, exclude_account_ids=exclude, account_filter=account_filter
        )
        if isinstance(reservation, NoAccount):
            _lead_due(lead, reservation.retry_at)
            return f"no account: {reservation.reason}"
        result = _send(
            lead=lead,
            step=step,
            recipient=recipient,
            record=record,
            reservation=reservation,
            sessions=sessions,
            state=state,
            steps=steps,
        )
        if result != "settled":
            return result
    return "too many settled recipients in one call"


def _skip_reason(recipient: Recipient, campaign: Campaign, now: datetime) -> str:
    if recipient.status in (Recipient.Status.BOUNCED, Recipient.Status.UNSUBSCRIBED):
        return f"recipient is {recipient.status}"
    if suppression_matches(email=recipient.email):
        return "address or domain is on the suppression list"
    if _cross_campaign_contact(recipient, campaign, now):
        return f"contacted by another active campaign within {settings.CAMPAIGN_CROSS_CONTACT_DAYS} days"
    return ""


def _claim(
    *, lead: Lead, step: SequenceStep, recipient: Recipient, record: SendRecord | None, values: dict
) -> SendRecord | None:
    """Commits the claim (state CLAIMED, our token, the Message-ID and the message) or returns None if another
    worker claimed it first: a new record (the unique constraint decides) or a DEFERRED one (the update does)."""
    try:
        with transaction.atomic():
            if record is None:
                return SendRecord.objects.create(
                    campaign_id=lead.campaign_id, lead=lead, recipient=recipient, step=step, attempts=1, **values
                )
            updated = SendRecord.objects.filter(id=record.id, state=State.DEFERRED).update(
                attempts=record.attempts + 1, **values
            )
            return SendRecord.objects.get(id=record.id) if updated else None
    except IntegrityError:
        return None


def _send(
    *,
    lead: Lead,
    step: SequenceStep,
    recipient: Recipient,
    record: SendRecord | None,
    reservation: Reservation,
    sessions: SmtpSessions,
    state: StepState | None = None,
    steps: list[SequenceStep] | None = None,
) -> str:
    account = reservation.account
    now = clock.now()
    references, previous_subject = _thread_references(recipient, step) if step.threaded else ([], None)
    message_id = message_id_new(account=account)
    try:
        rendered = step_render(step=step, recipient=recipient, account=account, previous_subject=previous_subject)
        message = message_build(
            rendered=rendered,
            account=account,
            to_email=recipient.email,
            to_name=recipient.name,
            message_id=message_id,
            date=now,
            unsubscribe_url=unsubscribe_url(recipient),
            references=references,
        )
        message_text = message.as_string()
    except (TemplateRenderError, ValueError, TypeError) as error:
        reservation_release(reservation=reservation)
        _record_final(
            recipient=recipient,
            step=step,
            record=record,
            state=State.FAILED,
            reason=f"template error: {error}",
            kind=Activity.Kind.TEMPLATE_ERROR,
        )
        return "settled"

    token = uuid.uuid4()
    claimed = _claim(
        lead=lead,
        step=step,
        recipient=recipient,
        record=record,
        values={
            "state": State.CLAIMED,
            "claim_token": token,
            "claimed_until": now + send_lease(),
            "account": account,
            "message_id": message_id,
            "subject": rendered.subject,
            "message": message_text,
            "next_attempt_at": None,
        },
    )
    if claimed is None:
        reservation_release(reservation=reservation)
        return "claimed by another worker"

    def hand_over() -> bool:
        handed_over = SendRecord.objects.filter(id=claimed.id, claim_token=token, state=State.CLAIMED).update(
            state=State.HANDED_OVER, handed_over_at=clock.now()
        )
        db_connection_release()  # not held while the server takes its time to answer the final dot
        return bool(handed_over)

    db_connection_release()  # nor while connecting and during MAIL/RCPT/DATA
    try:
        connection = sessions.get(account)
    except (smtplib.SMTPException, OSError) as error:
        result = smtp_classify_connect_error(error)
    else:
        result = smtp_deliver(
            connection,
            envelope_from=account.email,
            recipient=recipient.email,
            message_bytes=message_text.encode(),
            on_handover=hand_over,
        )
    return _record_result(
        lead=lead,
        step=step,
        recipient=recipient,
        record=claimed,
        token=token,
        result=result,
        reservation=reservation,
        account=account,
        state=state,
        steps=steps,
    )


def _record_result(
    *,
    lead: Lead,
    step: SequenceStep,
    recipient: Recipient,
    record: SendRecord,
    token: uuid.UUID,
    result: DeliveryResult,
    reservation: Reservation,
    account: SenderAccount,
    state: StepState | None,
    steps: list[SequenceStep] | None,
) -> str:
    finished = clock.now()
    mine = SendRecord.objects.filter(id=record.id, claim_token=token)
    common = {
        "claim_token": None,
        "claimed_until": None,
        "last_error": "" if result.outcome is Outcome.SENT else result.detail,
    }
    activity = {
        "campaign": lead.campaign_id,
        "lead": lead,
        "recipient": recipient,
        "account": account,
        "step_order": step.order,
    }
    detail = {"send_record": record.id, "message_id": record.message_id, "smtp": result.detail}

    if result.outcome in (Outcome.SENT, Outcome.UNKNOWN):
        # One transaction: the record, the recipient, the account's next slot and where the lead goes next.
        current = lead.current_step == step.order  # else: an operator's resend of an earlier step
        with transaction.atomic():
            if result.outcome is Outcome.SENT:
                mine.update(state=State.SENT, sent_at=finished, **common)
                Recipient.objects.filter(id=recipient.id).update(
                    status=_status_after_send(recipient), last_contacted_at=finished, last_step=step.order
                )
                activity_record(
                    kind=Activity.Kind.SENT, message=f"sent to {recipient.email}", detail=detail, **activity
                )
            else:
                mine.update(state=State.UNKNOWN, **common)
                activity_record(
                    kind=Activity.Kind.UNKNOWN, message=f"outcome unknown: {result.detail}", detail=detail, **activity
                )
            reservation_commit(reservation=reservation, finished_at=finished, delivered=result.outcome is Outcome.SENT)
            if not current:
                Lead.objects.filter(id=lead.id).update(last_sent_at=finished)
            else:
                state = state or _step_state(lead, step)
                record.state = State.SENT if result.outcome is Outcome.SENT else State.UNKNOWN
                state.records[recipient.id] = record
                pending = _next_recipient(lead, step, finished, state)
                if pending is None:
                    steps = steps if steps is not None else list(lead.campaign.steps.order_by("order"))
                    _lead_advance(lead, step, finished, steps, last_sent_at=finished)
                else:
                    wait = timedelta(seconds=reservation.wait_seconds)
                    due = pending if isinstance(pending, datetime) else finished + wait
                    Lead.objects.filter(id=lead.id, state=Lead.State.IN_PROGRESS).update(
                        last_sent_at=finished, next_due_at=window_next_open(at=due, campaign=lead.campaign)
                    )
        return "sent" if result.outcome is Outcome.SENT else "unknown"

    reservation_release(reservation=reservation)
    if result.outcome is Outcome.BOUNCED:
        mine.update(state=State.BOUNCED, **common)
        Recipient.objects.filter(id=recipient.id).update(status=Recipient.Status.BOUNCED)
        suppression_add(value=recipient.email, reason=f"bounced: {result.detail}"[:200])
        activity_record(kind=Activity.Kind.BOUNCED, message=result.detail, detail=detail, **activity)
        return "settled"
    if result.outcome is Outcome.FAILED:
        mine.update(state=State.FAILED, **common)
        activity_record(kind=Activity.Kind.FAILED, message=result.detail, detail=detail, **activity)
        return "settled"
    # DEFERRED or ACCOUNT_ERROR: nothing was delivered and the recipient is not at fault.
    account_error = result.outcome is Outcome.ACCOUNT_ERROR
    retry_at = finished if account_error else finished + _backoff(record.attempts)
    mine.update(state=State.DEFERRED, next_attempt_at=retry_at, **common)
    if account_error or result.account_fault:
        account_record_failure(account_id=account.id, reason=result.detail, pause_now=account_error)
    activity_record(
        kind=Activity.Kind.DEFERRED,
        message=result.detail,
        detail={**detail, "retry_at": retry_at.isoformat()},
        **activity,
    )
    if lead.current_step == step.order:
        _lead_due(lead, retry_at)
    return "deferred"


def _status_after_send(recipient: Recipient) -> str:
    """Sending never downgrades what we learned: replied, bounced or unsubscribed stay."""
    if recipient.status == Recipient.Status.NOT_CONTACTED:
        return Recipient.Status.CONTACTED
    return recipient.status


class ResolveAction:
    MARK_SENT = "mark_sent"
    MARK_FAILED = "mark_failed"
    RESEND = "resend"
    ALL = (MARK_SENT, MARK_FAILED, RESEND)


def send_record_resolve(*, record_id: int, action: str, actor: str) -> SendRecord:
    """An operator's verdict on an UNKNOWN send. `resend` sends it again (the operator knows it never arrived):
    the record returns to DEFERRED and the caller enqueues `campaigns.send_resend`."""
    if action not in ResolveAction.ALL:
        raise ValueError(f"unknown action {action!r}; use one of {', '.join(ResolveAction.ALL)}")
    now = clock.now()
    with transaction.atomic():
        record = SendRecord.objects.select_for_update().select_related("step").get(id=record_id)
        if record.state != State.UNKNOWN:
            raise ValueError(f"send {record.id} is {record.state}, not unknown")
        if action == ResolveAction.MARK_SENT:
            record.state, record.sent_at = State.SENT, record.handed_over_at or now
            recipient = Recipient.objects.get(id=record.recipient_id)
            Recipient.objects.filter(id=recipient.id).update(
                status=_status_after_send(recipient), last_contacted_at=record.sent_at, last_step=record.step.order
            )
        elif action == ResolveAction.MARK_FAILED:
            record.state = State.FAILED
        else:
            record.state, record.next_attempt_at = State.DEFERRED, now
        record.resolved_by = actor[:150]
        record.last_error = f"{record.last_error} | resolved by {actor}: {action}".strip(" |")[:2000]
        record.save()
        _record_activity(
            record,
            kind=Activity.Kind.STATUS_CHANGED,
            message=f"unknown send resolved by {actor}: {action}",
            detail={"send_record": record.id, "action": action},
        )
    return record


def send_record_resend(*, record_id: int, sessions: SmtpSessions) -> str:
    """Sends a DEFERRED record of any step again (an operator's resend), through the arbiter as usual."""
    record = SendRecord.objects.select_related("lead__campaign", "step__template", "recipient").get(id=record_id)
    if record.state != State.DEFERRED:
        return f"send {record.id} is {record.state}"
    reservation = account_reserve(campaign_id=record.campaign_id, now=clock.now())
    if isinstance(reservation, NoAccount):
        SendRecord.objects.filter(id=record.id, state=State.DEFERRED).update(next_attempt_at=reservation.retry_at)
        return f"no account: {reservation.reason}"
    return _send(
        lead=record.lead,
        step=record.step,
        recipient=record.recipient,
        record=record,
        reservation=reservation,
        sessions=sessions,
    )
