"""One campaign email, exactly once: render, claim, deliver, record.

The send record is claimed and committed (with its Message-ID and the rendered message) before anything is
sent; no transaction is open while the server or the ESP works. HANDED_OVER is committed at the point of no
return (`delivery`), and the result (record, recipient, activity) after the verdict. What the record's state
says after a crash, and what becomes of it, is the ledger's (`ledger`).

The batch (`batches`) chooses the recipients and reserves the accounts; each `Send` tells it how it ended
through its `on_settled` hook, so a lead moves on without this module knowing about leads' steps.
"""

import smtplib
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from psycopg.types.json import Jsonb

from campaigns.models import Activity, Lead, Recipient, SendRecord, SequenceStep
from campaigns.services.activities import activity_record
from campaigns.services.delivery import deliver, delivery_start, delivery_would_connect
from campaigns.services.ledger import ResolveAction, send_failure_settle, unknown_send_resolve
from campaigns.services.live import account_live_progress, campaign_live_changed, campaign_live_progress
from campaigns.services.outcomes import DeliveryResult, Outcome, SendOutcome
from campaigns.services.smtp import SmtpSessions, smtp_first_answered
from campaigns.services.templating import (
    SEND_REFERENCE_HEADER,
    TemplateRenderError,
    message_build,
    message_id_new,
    send_reference,
    step_render,
)
from campaigns.services.throttling import (
    NoAccount,
    Reservation,
    accounts_reserve,
    reservation_commit,
    reservation_commit_writes,
    reservation_holds_take,
    reservation_release_unclaimed,
    send_lease,
)
from campaigns.services.unsubscribes import recipient_unsubscribe_url
from emailsys import clock
from emailsys.db import connection_release_while_waiting, execute_prepared

State = SendRecord.State
CLAIM_CHUNK = 20  # at most this many sends rendered and claimed together
# Before opening another connection to an account whose connections all await verdicts, wait this long for one:
# a server that answers at once needs no second connection (each costs TCP, EHLO, TLS and AUTH).
NEW_CONNECTION_PATIENCE = 0.05


@dataclass(eq=False)  # one email: compared by identity
class Send:
    """One email on its way: chosen, reserved, rendered, claimed, delivered, recorded."""

    lead: Lead
    step: SequenceStep
    recipient: Recipient
    record: SendRecord | None  # an earlier attempt (DEFERRED), if any
    earlier: list[SendRecord]  # the recipient's sent (or maybe sent) records of earlier steps (threading)
    on_settled: Callable[["Send", SendOutcome], None] | None = None  # told once, however the send ended
    reservation: Reservation | None = None
    claimed: SendRecord | None = None
    token: uuid.UUID | None = None
    message_text: str = ""

    def settled(self, outcome: SendOutcome) -> SendOutcome:
        if self.on_settled is not None:
            self.on_settled(self, outcome)
        return outcome


@dataclass(frozen=True)
class Awaiting:
    send: Send
    connection: smtplib.SMTP
    since: float  # time.monotonic() when the final dot went


def sends_deliver(sends: list[Send], *, sessions: SmtpSessions) -> None:
    """Renders, claims and delivers reserved sends in chunks of 1, 2, 4 … up to 20: the first email leaves after
    one rendering, and a batch's rendering spreads over its SMTP waits instead of all happening at its start
    (where every thread of a busy pool would do it at once).

    Up to CAMPAIGN_SMTP_AWAITING_PER_THREAD handed-over messages wait for their verdicts at once, each on its
    own connection: against a server that answers the final dot late, the thread starts the next message
    instead of idling. Verdicts are recorded as they arrive: one that is slow to come holds up no other."""
    awaiting: list[Awaiting] = []  # handed over, verdict not read yet; oldest first
    try:
        start, size = 0, 1
        while start < len(sends):
            chunk_at = clock.now()
            prepared = [send for send in sends[start : start + size] if send_prepare(send, chunk_at)]
            for send in sends_claim(prepared, chunk_at):
                assert send.reservation is not None
                while awaiting and _verdict_next(awaiting, sessions, wait=0):
                    pass  # verdicts already in: their connections are free again, no new one is opened
                if awaiting and delivery_would_connect(account=send.reservation.account, sessions=sessions):
                    _verdict_next(awaiting, sessions, wait=NEW_CONNECTION_PATIENCE)
                while len(awaiting) >= settings.CAMPAIGN_SMTP_AWAITING_PER_THREAD:
                    _verdict_next(awaiting, sessions)
                started = _send_start(send, sessions)
                if isinstance(started, DeliveryResult):
                    _send_settle(send, started)
                else:
                    awaiting.append(Awaiting(send, started, time.monotonic()))
            start, size = start + size, min(size * 2, CLAIM_CHUNK)
    finally:  # every handed-over message gets its verdict read and recorded, whatever stopped the loop
        while awaiting:
            _verdict_next(awaiting, sessions)
        # Once per account, not per email: a batch's sends reach its accounts' pages together (their
        # reservation already did). Twenty unthrottled accounts sending at once would otherwise each publish
        # a few times a second.
        for account_id in {send.reservation.account_id for send in sends if send.reservation}:
            account_live_progress(account_id)


def _thread_references(earlier: Iterable[SendRecord]) -> tuple[list[str], str | None]:
    """Message-IDs of a recipient's earlier emails in the campaign, oldest first, and the last subject."""
    earlier = list(earlier)
    return [record.message_id for record in earlier if record.message_id], (earlier[-1].subject if earlier else None)


def send_prepare(send: Send, now: datetime) -> bool:
    """Renders the exact message and builds the claim. A template error fails only this recipient (the lead
    goes on): the reservation is given back and the recipient's record says why."""
    assert send.reservation is not None
    account = send.reservation.account
    references, previous_subject = _thread_references(send.earlier) if send.step.threaded else ([], None)
    message_id = message_id_new(account=account)
    try:
        rendered = step_render(
            step=send.step, recipient=send.recipient, account=account, previous_subject=previous_subject
        )
        message = message_build(
            rendered=rendered,
            account=account,
            to_email=send.recipient.email,
            to_name=send.recipient.display_name,
            message_id=message_id,
            date=now,
            unsubscribe_url=recipient_unsubscribe_url(send.recipient),
            references=references,
            extra_headers={SEND_REFERENCE_HEADER: send_reference(kind="c", message_id=message_id)},
        )
        send.message_text = message.as_string()
    except Exception as error:  # noqa: BLE001 - whatever this recipient's message does, it fails this one alone
        reservation_release_unclaimed(reservation=send.reservation)
        send_record_final(
            recipient=send.recipient,
            step=send.step,
            record=send.record,
            state=State.FAILED,
            reason=f"template error: {error if isinstance(error, TemplateRenderError | ValueError) else repr(error)}",
            kind=Activity.Kind.TEMPLATE_ERROR,
        )
        send.settled(SendOutcome.TEMPLATE_ERROR)
        return False
    send.token = uuid.uuid4()
    send.claimed = SendRecord(
        campaign_id=send.lead.campaign_id,
        lead=send.lead,
        recipient=send.recipient,
        step=send.step,
        state=State.CLAIMED,
        claim_token=send.token,
        claimed_until=now + send_lease(),
        account=account,
        message_id=message_id,
        subject=rendered.subject,
        message=send.message_text,
        next_attempt_at=None,
        attempts=(send.record.attempts if send.record else 0) + 1,
    )
    return True


_CLAIM_FIELDS = ("state", "claim_token", "claimed_until", "account", "message_id", "subject", "message",
                 "next_attempt_at", "attempts")  # fmt: skip


class _HoldLapsed(Exception):
    """A claim's reservation hold was given back after its lease: roll the claim back."""


def sends_claim(sends: list[Send], now: datetime) -> list[Send]:
    """Commits the claims (state CLAIMED, our token, the Message-ID and the message) in one transaction, with
    their reservations taken off their holds (`reservation_holds_take`): a crash leaves either the record or the
    held count, never a count nothing gives back. A send another worker claimed first is dropped and its
    reservation given back: a new record loses on the unique constraint, a DEFERRED one on the conditional
    update. A send whose recipient replied, bounced or unsubscribed, or whose lead stopped, since it was planned
    is withdrawn the same way. A send whose hold the arbiter gave back (its lease passed before the claim) is
    not sent (LAPSED): its count is no longer reserved."""
    sends = _sends_still_wanted(sends)
    fresh = [send for send in sends if send.record is None]
    lapsed: set[int] = set()
    try:
        with transaction.atomic():
            SendRecord.objects.bulk_create([send.claimed for send in fresh])
            won = fresh + [send for send in sends if send.record is not None and _claim_retry(send)]
            if not reservation_holds_take(reservations=[send.reservation for send in won], now=now):
                raise _HoldLapsed
    except (IntegrityError, _HoldLapsed):  # a concurrent worker got one of them, or a hold lapsed: one by one
        for send in fresh:
            send.claimed.pk = None
        claims = {id(send): _claim_one(send, now) for send in sends}
        won = [send for send in sends if claims[id(send)] is True]
        lapsed = {key for key, claimed in claims.items() if claimed is None}
    won_ids = {id(send) for send in won}
    for send in sends:
        if id(send) in lapsed:
            send.settled(SendOutcome.LAPSED)
        elif id(send) not in won_ids:
            assert send.reservation is not None
            reservation_release_unclaimed(reservation=send.reservation)
            send.settled(SendOutcome.CLAIMED_ELSEWHERE)
    return [send for send in sends if id(send) in won_ids]


def _sends_still_wanted(sends: list[Send]) -> list[Send]:
    """One query per chunk: what an operator, a reply or an unsubscribe changed meanwhile counts before the email."""
    if not sends:
        return sends
    wanted = set(
        Recipient.objects.filter(
            id__in=[send.recipient.id for send in sends],
            status__in=Recipient.MAILABLE_STATUSES,
            lead__state=Lead.State.IN_PROGRESS,
        ).values_list("id", flat=True)
    )
    for send in sends:
        if send.recipient.id not in wanted:
            assert send.reservation is not None
            reservation_release_unclaimed(reservation=send.reservation)
            send.settled(SendOutcome.WITHDRAWN)
    return [send for send in sends if send.recipient.id in wanted]


def _claim_retry(send: Send) -> bool:
    assert send.record is not None and send.claimed is not None
    values = {name: getattr(send.claimed, name) for name in _CLAIM_FIELDS}
    if not SendRecord.objects.filter(id=send.record.id, state=State.DEFERRED).update(**values):
        return False
    send.claimed.id = send.record.id
    return True


def _claim_one(send: Send, now: datetime) -> bool | None:
    """Claims one send with its reservation off its hold: True; claimed elsewhere: False; hold lapsed: None."""
    assert send.claimed is not None and send.reservation is not None
    try:
        with transaction.atomic():
            if send.record is not None:
                if not _claim_retry(send):
                    return False
            else:
                send.claimed.save(force_insert=True)
            if not reservation_holds_take(reservations=[send.reservation], now=now):
                raise _HoldLapsed
            return True
    except IntegrityError:
        send.claimed.pk = None
        return False
    except _HoldLapsed:
        send.claimed.pk = None
        return None


# The two statements every email runs, in SQL: through the ORM they cost more CPU than rendering the message.
# Neither touches `updated_at` (like QuerySet.update). The SENT statement updates the recipient and logs the
# activity only if the record was still ours; a recipient who replied, bounced or unsubscribed keeps that status.
_STATES = {
    "claimed": State.CLAIMED,
    "handed_over": State.HANDED_OVER,
    "sent": State.SENT,
    "not_contacted": Recipient.Status.NOT_CONTACTED,
    "contacted": Recipient.Status.CONTACTED,
}
_HAND_OVER_SQL = """
    UPDATE campaigns_sendrecord SET state = %(handed_over)s, handed_over_at = %(at)s
     WHERE id = %(record)s AND claim_token = %(token)s AND state = %(claimed)s"""
_SENT_SQL_SHAPE = """
    WITH record AS (
        UPDATE campaigns_sendrecord
           SET state = %(sent)s, sent_at = %(at)s, claim_token = NULL, claimed_until = NULL, last_error = '',
               provider_message_id = %(provider_message_id)s
         WHERE id = %(record)s AND claim_token = %(token)s
     RETURNING id
    ), recipient AS (
        UPDATE campaigns_recipient
           SET status = CASE WHEN status = %(not_contacted)s THEN %(contacted)s ELSE status END,
               last_contacted_at = %(at)s, last_step = %(step_order)s
         WHERE id = %(recipient)s AND EXISTS (SELECT FROM record)
    ){first_send}
    INSERT INTO campaigns_activity
           (created_at, kind, campaign_id, lead_id, recipient_id, account_id, step_order, message, detail)
    SELECT %(at)s, %(kind)s, %(campaign)s, %(lead)s, %(recipient)s, %(account)s, %(step_order)s, %(message)s,
           %(detail)s
      FROM record"""
_SENT_SQL = _SENT_SQL_SHAPE.format(first_send="")
# The lead's first email: its account becomes the lead's sender (`Lead.sender_account`), in the same statement.
_SENT_FIRST_SQL = _SENT_SQL_SHAPE.format(
    first_send=""", lead AS (
        UPDATE campaigns_lead SET sender_account_id = %(account)s
         WHERE id = %(lead)s AND sender_account_id IS NULL AND EXISTS (SELECT FROM record)
    )"""
)


def _hand_over_hook(send: Send) -> Callable[[], bool]:
    """Commits HANDED_OVER at the point of no return, if the claim is still ours (else nothing is sent)."""
    assert send.claimed is not None
    record_id, token = send.claimed.id, send.token

    def hand_over() -> bool:
        params = {"record": record_id, "token": token, "at": clock.now(), **_STATES}
        return execute_prepared(_HAND_OVER_SQL, params) == 1

    return hand_over


def _send_start(send: Send, sessions: SmtpSessions) -> DeliveryResult | smtplib.SMTP:
    assert send.reservation is not None
    return delivery_start(
        account=send.reservation.account, sessions=sessions, recipient=send.recipient.email,
        message_bytes=send.message_text.encode(), on_handover=_hand_over_hook(send),
    )  # fmt: skip


def _verdict_next(awaiting: list[Awaiting], sessions: SmtpSessions, *, wait: float | None = None) -> bool:
    """Records the first verdict to arrive, waiting up to `wait` seconds (None: as long as the oldest may still
    take): whether one was recorded. The oldest is given up on (UNKNOWN) once it has waited the SMTP timeout."""
    oldest = awaiting[0]
    timeout = settings.CAMPAIGN_SMTP_TIMEOUT
    left = oldest.since + timeout - time.monotonic()
    patience = left if wait is None else min(wait, left)
    if patience > 0.001:
        connection_release_while_waiting()  # not held while servers take their time to answer final dots
    index = smtp_first_answered([entry.connection for entry in awaiting], timeout=patience)
    if index is None:
        if left > patience:
            return False
        awaiting.pop(0)
        _send_settle(oldest.send, sessions.verdict_given_up(oldest.connection, waited=timeout))
        return True
    entry = awaiting.pop(index)
    _send_settle(entry.send, sessions.verdict_read(entry.connection))
    return True


def _send_settle(send: Send, result: DeliveryResult) -> SendOutcome:
    outcome = _send_record_result(send, result)
    campaign_live_progress(send.lead.campaign_id)  # the account's: once its batch's sends are done
    return send.settled(outcome)


_STATE_AFTER = {
    Outcome.UNKNOWN: State.UNKNOWN,
    Outcome.BOUNCED: State.BOUNCED,
    Outcome.FAILED: State.FAILED,
    Outcome.DEFERRED: State.DEFERRED,
    Outcome.ACCOUNT_ERROR: State.DEFERRED,
}
_ACTIVITY_KIND = {
    State.UNKNOWN: Activity.Kind.UNKNOWN,
    State.BOUNCED: Activity.Kind.BOUNCED,
    State.FAILED: Activity.Kind.FAILED,
    State.DEFERRED: Activity.Kind.DEFERRED,
}


def _send_record_result(send: Send, result: DeliveryResult) -> SendOutcome:
    """The record, the recipient and the activity in one transaction; the account's slot committed or given back."""
    assert send.claimed is not None and send.reservation is not None
    record, recipient, account, reservation = send.claimed, send.recipient, send.reservation.account, send.reservation
    finished = clock.now()
    activity = {
        "campaign": send.lead.campaign_id,
        "lead": send.lead,
        "recipient": recipient,
        "account": account,
        "step_order": send.step.order,
    }
    detail = {"send_record": record.id, "message_id": record.message_id, "smtp": result.detail}
    if result.provider_message_id:
        detail["provider_message_id"] = result.provider_message_id
    record.claim_token, record.claimed_until = None, None

    if result.outcome is Outcome.SENT:
        # One statement; in a transaction with the account's slot only when that needs a write.
        with transaction.atomic() if reservation_commit_writes(reservation, delivered=True) else nullcontext():
            first_send = send.lead.sender_account_id is None
            execute_prepared(
                _SENT_FIRST_SQL if first_send else _SENT_SQL,
                {
                    "record": record.id, "token": send.token, "at": finished, "recipient": recipient.id,
                    "step_order": send.step.order, "campaign": send.lead.campaign_id, "lead": send.lead.id,
                    "account": account.id, "message": f"sent to {recipient.email}", "detail": Jsonb(detail),
                    "kind": Activity.Kind.SENT, "provider_message_id": result.provider_message_id, **_STATES,
                },
            )  # fmt: skip
            reservation_commit(reservation=reservation, finished_at=finished, delivered=True, announce=False)
        if first_send:
            send.lead.sender_account_id = account.id
        record.state, record.sent_at = State.SENT, finished
        record.provider_message_id = result.provider_message_id
        return SendOutcome.SENT
    with transaction.atomic():
        retry_at = send_failure_settle(
            mine=SendRecord.objects.filter(id=record.id, claim_token=send.token), reservation=reservation,
            result=result, email=recipient.email, attempts=record.attempts, finished=finished,
        )  # fmt: skip
        record.state = _STATE_AFTER[result.outcome]
        if result.outcome is Outcome.BOUNCED:
            Recipient.objects.filter(id=recipient.id).update(status=Recipient.Status.BOUNCED)
        if retry_at is not None:
            record.next_attempt_at = retry_at
            detail["retry_at"] = retry_at.isoformat()
        message = f"outcome unknown: {result.detail}" if result.outcome is Outcome.UNKNOWN else result.detail
        activity_record(kind=_ACTIVITY_KIND[record.state], message=message, detail=detail, **activity)
    return SendOutcome.of(result.outcome)


def send_record_final(
    *, recipient: Recipient, step: SequenceStep, record: SendRecord | None, state: str, reason: str, kind: str
) -> None:
    """A recipient that is settled without SMTP (skipped, template error, gave up): one record, one activity."""
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


def send_record_activity(record: SendRecord, *, kind: str, message: str, detail: dict) -> None:
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


# --- an operator's verdict on an unknown send ------------------------------------------------------------------


def _status_after_send(recipient: Recipient) -> str:
    """Sending never downgrades what we learned: replied, bounced or unsubscribed stay."""
    if recipient.status == Recipient.Status.NOT_CONTACTED:
        return Recipient.Status.CONTACTED
    return recipient.status


def send_record_resolve(*, record_id: int, action: str, actor: str) -> SendRecord:
    """An operator's verdict on an UNKNOWN campaign send. `resend` sends it again (the operator knows it never
    arrived): the record returns to DEFERRED and the caller enqueues `campaigns.send_resend`."""
    with transaction.atomic():
        record = unknown_send_resolve(
            records=SendRecord.objects.select_related("step"), record_id=record_id, action=action, actor=actor
        )
        if action == ResolveAction.MARK_SENT:
            recipient = Recipient.objects.get(id=record.recipient_id)
            Recipient.objects.filter(id=recipient.id).update(
                status=_status_after_send(recipient), last_contacted_at=record.sent_at, last_step=record.step.order
            )
        send_record_activity(
            record,
            kind=Activity.Kind.STATUS_CHANGED,
            message=f"unknown send resolved by {actor}: {action}",
            detail={"send_record": record.id, "action": action},
        )
        campaign_live_changed(record.campaign_id)
    return record


def send_record_resend(*, record_id: int, sessions: SmtpSessions) -> str:
    """Sends a DEFERRED record of any step again (an operator's resend), through the arbiter as usual: the
    outcome, or why nothing was sent."""
    record = SendRecord.objects.select_related(
        "lead__campaign", "step__template", "step__campaign", "recipient__lead"
    ).get(id=record_id)
    if record.state != State.DEFERRED:
        return f"send {record.id} is {record.state}"
    now = clock.now()
    reserved = accounts_reserve(campaign_id=record.campaign_id, count=1, now=now)
    if isinstance(reserved, NoAccount):
        SendRecord.objects.filter(id=record.id, state=State.DEFERRED).update(next_attempt_at=reserved.retry_at)
        return f"no account: {reserved.reason}"
    earlier = SendRecord.objects.filter(
        recipient=record.recipient, step__order__lt=record.step.order, state__in=(State.SENT, State.UNKNOWN)
    )
    send = Send(
        record.lead,
        record.step,
        record.recipient,
        record,
        earlier=list(earlier.order_by("step__order").defer("message")),
        reservation=reserved[0],
    )
    if not send_prepare(send, now):
        return SendOutcome.TEMPLATE_ERROR
    if not sends_claim([send], now):
        return SendOutcome.CLAIMED_ELSEWHERE
    assert send.reservation is not None
    result = deliver(
        account=send.reservation.account, sessions=sessions, recipient=send.recipient.email,
        message_bytes=send.message_text.encode(), on_handover=_hand_over_hook(send),
    )  # fmt: skip
    outcome = _send_settle(send, result)
    account_live_progress(send.reservation.account_id)
    if outcome in (SendOutcome.SENT, SendOutcome.UNKNOWN):
        Lead.objects.filter(id=record.lead_id).update(last_sent_at=clock.now())
    return outcome
