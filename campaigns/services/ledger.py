"""The send-attempt ledger: what a send attempt's row becomes, for campaign sends (`SendRecord`) and event
mailings (`workorders.MailingSend`) alike. Both are `SendAttempt`s with the same states and claim fields; this
module is the API both use (`workorders` imports nothing else of the sending core's state handling).

A row is claimed (CLAIMED, a claim token, a lease) and committed before anything is sent, HANDED_OVER is
committed at the point of no return, and the verdict is written only while the claim token is still ours
(`mine`: the row filtered by it). The functions here, in the order a send's life reaches them:

- `attempts_exhausted`: a DEFERRED row that has been tried often enough is given up on (FAILED);
- `stale_claim_give_back`: a dead worker's CLAIMED row never reached the server → DEFERRED, due now;
- `stale_hand_over_settle`: a dead worker's HANDED_OVER row may have been delivered → UNKNOWN;
- `send_failure_settle`: a live send's verdict other than SENT (unknown, bounced, failed, deferred);
- `unknown_send_resolve`: an operator's verdict on an UNKNOWN row (mark sent, mark failed, resend).

Each is a conditional update on the state and claim token it expects, so two callers (a redelivered task, a
sweeper beside a worker) never both act on one row.
"""

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import QuerySet

from audit.actions import AuditAction
from audit.services import audit_record
from campaigns.models import SendAttempt, SenderAccount
from campaigns.services.outcomes import DeliveryResult, Outcome
from campaigns.services.suppressions import suppression_add
from campaigns.services.throttling import (
    Reservation,
    account_local_day,
    account_record_failure,
    reservation_commit,
    reservation_release,
    send_lease,
    usage_give_back,
)
from emailsys import clock

State = SendAttempt.State
MAX_DEFERRALS = 8


def attempts_exhausted(record: SendAttempt | None) -> bool:
    """A DEFERRED row tried MAX_DEFERRALS times: the caller settles it as FAILED instead of trying again."""
    return bool(record and record.state == State.DEFERRED and record.attempts >= MAX_DEFERRALS)


def retry_backoff(attempts: int) -> timedelta:
    """How long a deferred send waits before its next attempt: 1, 2, 4 … minutes, at most an hour."""
    return timedelta(seconds=min(3600, 60 * 2 ** max(0, attempts - 1)))


def stale_claim_give_back(*, record: SendAttempt, campaign_id: int | None, now: datetime) -> bool:
    """A dead worker's CLAIMED row (it never reached the server) becomes DEFERRED, due now, and its account
    slot is given back, exactly once: the conditional update on the old claim token decides which caller does
    it. `campaign_id` is None for an event mailing (its reservation counted only on the account)."""
    with transaction.atomic():
        mine = type(record).objects.filter(id=record.id, state=State.CLAIMED, claim_token=record.claim_token)
        recovered = mine.update(
            state=State.DEFERRED, next_attempt_at=now, claim_token=None, claimed_until=None,
            last_error="the worker stopped before handing the message to SMTP; nothing was sent",
        )  # fmt: skip
        if recovered and record.account_id and record.claimed_until:
            claimed_at = record.claimed_until - send_lease()
            day = account_local_day(SenderAccount.objects.get(id=record.account_id), claimed_at)
            usage_give_back(account_id=record.account_id, campaign_id=campaign_id, day=day)
    return bool(recovered)


def stale_hand_over_settle(*, record: SendAttempt, reason: str) -> bool:
    """A dead worker's HANDED_OVER row may have been delivered: UNKNOWN, never retried automatically. It still
    counts against the account's limit."""
    return bool(
        type(record)
        .objects.filter(id=record.id, state=State.HANDED_OVER, claim_token=record.claim_token)
        .update(state=State.UNKNOWN, last_error=reason, claim_token=None, claimed_until=None)
    )


def send_failure_settle(
    *, mine: QuerySet, reservation: Reservation, result: DeliveryResult, email: str, attempts: int, finished: datetime
) -> datetime | None:
    """What a claimed row becomes when its message was not delivered, or no verdict came: `mine` is the row
    filtered by our claim token. UNKNOWN keeps the account's slot (it may have been delivered); the others give
    it back. A bounce suppresses the address; an account's fault counts towards pausing it. Returns when a
    DEFERRED row may be retried."""
    common = {"claim_token": None, "claimed_until": None, "last_error": result.detail}
    if result.outcome is Outcome.UNKNOWN:
        with transaction.atomic():
            mine.update(state=State.UNKNOWN, **common)
            reservation_commit(reservation=reservation, finished_at=finished, delivered=False)
        return None
    reservation_release(reservation=reservation)
    if result.outcome is Outcome.BOUNCED:
        mine.update(state=State.BOUNCED, **common)
        suppression_add(value=email, reason=f"bounced: {result.detail}"[:200])
        return None
    if result.outcome is Outcome.FAILED:
        mine.update(state=State.FAILED, **common)
        return None
    # DEFERRED or ACCOUNT_ERROR: nothing was delivered and the recipient is not at fault.
    account_error = result.outcome is Outcome.ACCOUNT_ERROR
    retry_at = finished if account_error else finished + retry_backoff(attempts)
    mine.update(state=State.DEFERRED, next_attempt_at=retry_at, **common)
    if account_error or result.account_fault:
        account_record_failure(account_id=reservation.account_id, reason=result.detail, pause_now=account_error)
    return retry_at


class ResolveAction:
    MARK_SENT = "mark_sent"
    MARK_FAILED = "mark_failed"
    RESEND = "resend"
    ALL = (MARK_SENT, MARK_FAILED, RESEND)


def unknown_send_resolve(*, records: QuerySet, record_id: int, action: str, actor: str) -> SendAttempt:
    """An operator's verdict on an UNKNOWN send of any kind (`records`: SendRecord or MailingSend objects),
    locked and saved in the caller's transaction: mark sent, mark failed, or resend — DEFERRED and due now."""
    if action not in ResolveAction.ALL:
        raise ValueError(f"unknown action {action!r}; use one of {', '.join(ResolveAction.ALL)}")
    now = clock.now()
    record = records.select_for_update().get(id=record_id)
    if record.state != State.UNKNOWN:
        raise ValueError(f"send {record.id} is {record.state}, not unknown")
    if action == ResolveAction.MARK_SENT:
        record.state, record.sent_at = State.SENT, record.handed_over_at or now
    elif action == ResolveAction.MARK_FAILED:
        record.state = State.FAILED
    else:
        record.state, record.next_attempt_at = State.DEFERRED, now
    record.resolved_by = actor[:150]
    record.last_error = f"{record.last_error} | resolved by {actor}: {action}".strip(" |")[:2000]
    record.save()
    audit_record(
        action=AuditAction.SEND_RESOLVE,
        target=record,
        changes={"state": [State.UNKNOWN, record.state]},
        detail={"verdict": action},
    )
    return record
