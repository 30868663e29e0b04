"""Sending leads' emails exactly once, a batch of leads at a time.

A batch loads its leads, their campaign's steps, recipients and send records once, reserves accounts for all
of its sends in one arbiter transaction and claims all of their send records in one more. Then each email
goes out on its own: HANDED_OVER is committed after the server's 354 and before the content, and the result
(record, recipient, activity) in one transaction after the reply. Where the leads go next is written once,
at the end of the batch; a lead's claim lease covers it until then.

The send record is claimed and committed (with its Message-ID and the rendered message) before SMTP; no
transaction is open during SMTP. The record's state after a crash says what happened:

- CLAIMED, lease expired: the content never left (HANDED_OVER is committed before it does) → retried.
- HANDED_OVER, lease expired: the content may have left → UNKNOWN, never retried automatically; it counts
  against the account's limit and the lead moves on. An operator resolves it in the admin.
"""

import logging
import smtplib
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db import connection as db_connection
from django.db.models import QuerySet
from django.db.models.functions import Lower
from psycopg.types.json import Jsonb

from campaigns.models import Activity, Campaign, Lead, Recipient, SenderAccount, SendRecord, SequenceStep
from campaigns.services.activities import activity_record
from campaigns.services.esp import esp_account, esp_send
from campaigns.services.operations import suppressed_among, suppression_add
from campaigns.services.smtp import (
    DeliveryResult,
    Outcome,
    smtp_classify_connect_error,
    smtp_connect,
    smtp_first_answered,
    smtp_hand_over,
    smtp_no_verdict,
    smtp_verdict,
)
from campaigns.services.templating import TemplateRenderError, message_build, message_id_new, step_render
from campaigns.services.throttling import (
    NoAccount,
    Reservation,
    account_local_day,
    account_record_failure,
    accounts_next_opening,
    accounts_reserve,
    reservation_commit,
    reservation_commit_writes,
    reservation_release,
    send_lease,
    usage_give_back,
)
from campaigns.services.windows import window_next_open
from emailsys import clock
from emailsys.db import execute_prepared, rows_update

logger = logging.getLogger(__name__)

MAX_DEFERRALS = 8
CLAIM_CHUNK = 20  # at most this many sends rendered and claimed together
MAX_ROUNDS = 100  # a batch goes round its leads again while one has a recipient to send to right now
# Before opening another connection to an account whose connections all await verdicts, wait this long for one:
# a server that answers at once needs no second connection (each costs TCP, EHLO, TLS and AUTH).
NEW_CONNECTION_PATIENCE = 0.05
State = SendRecord.State


@dataclass
class SmtpSessions:
    """Open SMTP connections per account, reused across leads and batches by one worker thread.

    A thread may have several messages to one account awaiting their verdicts, each on its own connection:
    `get()` returns one that awaits nothing, opening another if needed. A connection idle for a while is
    checked with NOOP before reuse (servers drop idle clients); `close_idle()` hangs up on accounts not used
    recently.
    """

    connections: dict[int, list[smtplib.SMTP]] = field(default_factory=dict)
    last_used: dict[int, float] = field(default_factory=dict)
    awaiting: set[int] = field(default_factory=set)  # id() of connections whose verdict is not read yet
    check_after_seconds: float = 5.0

    def get(self, account: SenderAccount) -> smtplib.SMTP:
        pool = self.connections.setdefault(account.id, [])
        pool[:] = [connection for connection in pool if connection.sock is not None]
        idle = time.monotonic() - self.last_used.get(account.id, 0.0)
        self.last_used[account.id] = time.monotonic()
        for connection in pool:
            if id(connection) in self.awaiting:
                continue
            if idle > self.check_after_seconds and not _answers_noop(connection):
                continue
            return connection
        connection = smtp_connect(account)
        pool.append(connection)
        return connection

    def has_free(self, account: SenderAccount) -> bool:
        """An open connection to the account that awaits no verdict."""
        return any(
            connection.sock is not None and id(connection) not in self.awaiting
            for connection in self.connections.get(account.id, ())
        )

    def close_idle(self, *, max_idle_seconds: float) -> None:
        now = time.monotonic()
        for account_id in [a for a, used in self.last_used.items() if now - used > max_idle_seconds]:
            for connection in self.connections.pop(account_id, ()):
                _hang_up(connection)
            self.last_used.pop(account_id, None)

    def close(self) -> None:
        for pool in self.connections.values():
            for connection in pool:
                _hang_up(connection)
        self.connections.clear()
        self.last_used.clear()
        self.awaiting.clear()


def _answers_noop(connection: smtplib.SMTP) -> bool:
    try:
        return connection.noop()[0] == 250
    except (smtplib.SMTPException, OSError):
        connection.close()
        return False


def _hang_up(connection: smtplib.SMTP) -> None:
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


# --- What a batch knows ------------------------------------------------------------------------------------


@dataclass
class StepState:
    """A lead's recipients and their send records for one step, loaded once per batch and kept up to date in
    memory by this worker (the lead is claimed, so no one else moves it meanwhile)."""

    recipients: list[Recipient]
    records: dict[int, SendRecord]


@dataclass
class LeadWork:
    """One claimed lead in a batch: what was loaded, and what to write about it when the batch ends."""

    lead: Lead
    steps: list[SequenceStep]
    state: StepState | None
    earlier: dict[int, list[SendRecord]]  # recipient id → its SENT records of earlier steps (threading)
    changes: dict = field(default_factory=dict)  # Lead fields to write at the end of the batch
    activities: list[Activity] = field(default_factory=list)  # step completed, written with the changes
    outcomes: list[str] = field(default_factory=list)
    again: bool = False  # another recipient can go right now: plan this lead again in the next round

    @property
    def step(self) -> SequenceStep | None:
        return next((step for step in self.steps if step.order == self.lead.current_step), None)

    def done(self, outcome: str, **changes) -> None:
        self.outcomes.append(outcome)
        self.changes.update(changes)
        self.again = False


@dataclass
class Send:
    """One email on its way: chosen, reserved, rendered, claimed, delivered, recorded."""

    lead: Lead
    step: SequenceStep
    recipient: Recipient
    record: SendRecord | None  # an earlier attempt (DEFERRED), if any
    earlier: list[SendRecord]
    work: LeadWork | None = None
    reservation: Reservation | None = None
    claimed: SendRecord | None = None
    token: uuid.UUID | None = None
    message_text: str = ""


def _batch_load(lead_ids: list[int]) -> list[LeadWork]:
    """Four queries for the whole batch, in the order given (the dispatcher puts overdue leads first)."""
    leads = {lead.id: lead for lead in Lead.objects.select_related("campaign").filter(id__in=lead_ids)}
    campaigns = {lead.campaign_id: lead.campaign for lead in leads.values()}
    steps: dict[int, list[SequenceStep]] = defaultdict(list)
    for step in SequenceStep.objects.filter(campaign_id__in=campaigns).select_related("template").order_by("order"):
        step.campaign = campaigns[step.campaign_id]
        steps[step.campaign_id].append(step)
    recipients: dict[int, list[Recipient]] = defaultdict(list)
    for recipient in Recipient.objects.filter(lead_id__in=leads).order_by("lead_id", "position"):
        recipient.lead = leads[recipient.lead_id]
        recipients[recipient.lead_id].append(recipient)
    records: dict[int, list[SendRecord]] = defaultdict(list)
    for record in SendRecord.objects.filter(lead_id__in=leads).defer("message"):
        records[record.lead_id].append(record)

    works = []
    for lead_id in dict.fromkeys(lead_ids):
        lead = leads.get(lead_id)
        if lead is None:
            continue
        work = LeadWork(lead=lead, steps=steps[lead.campaign_id], state=None, earlier=defaultdict(list))
        orders = {step.id: step.order for step in work.steps}
        current = work.step
        for record in sorted(records[lead_id], key=lambda r: orders.get(r.step_id, 0)):
            if current and record.state == State.SENT and orders.get(record.step_id, 0) < current.order:
                work.earlier[record.recipient_id].append(record)
        if current is not None:
            work.state = StepState(
                recipients=recipients[lead_id],
                records={r.recipient_id: r for r in records[lead_id] if r.step_id == current.id},
            )
        works.append(work)
    return works


def _step_state_reload(work: LeadWork) -> None:
    """After a recipient was settled in the database (a rare path), read the step's records again."""
    step = work.step
    if work.state is not None and step is not None:
        work.state.records = {
            record.recipient_id: record
            for record in SendRecord.objects.filter(lead=work.lead, step=step).defer("message")
        }


def _thread_references(earlier: Iterable[SendRecord]) -> tuple[list[str], str | None]:
    """Message-IDs of a recipient's earlier emails in the campaign, oldest first, and the last subject."""
    earlier = list(earlier)
    return [record.message_id for record in earlier if record.message_id], (earlier[-1].subject if earlier else None)


def _contacted_elsewhere(emails: list[str], campaign: Campaign, now: datetime) -> set[str]:
    """Addresses (lower-cased) sent to by another active campaign within the configured days. One query."""
    days = settings.CAMPAIGN_CROSS_CONTACT_DAYS
    if not days or not emails:
        return set()
    return set(
        SendRecord.objects.annotate(address=Lower("recipient__email"))
        .filter(
            address__in={email.lower() for email in emails},
            campaign__status=Campaign.Status.ACTIVE,
            state=State.SENT,
            sent_at__gte=now - timedelta(days=days),
        )
        .exclude(campaign=campaign)
        .values_list("address", flat=True)
    )


@dataclass(frozen=True)
class NextRecipient:
    recipient: Recipient
    record: SendRecord | None


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
    if not stale_claim_give_back(record=record, campaign_id=record.campaign_id, now=now):
        return None
    return SendRecord.objects.defer("message").get(id=record.id)


def _settle_as_unknown(record: SendRecord, now: datetime, reason: str) -> None:
    if stale_hand_over_settle(record=record, reason=reason):
        _record_activity(
            record,
            kind=Activity.Kind.UNKNOWN,
            message=f"outcome unknown: {reason}",
            detail={"send_record": record.id, "message_id": record.message_id},
        )


# --- What any send record becomes (campaign sends and event mailings alike) ------------------------------


def stale_claim_give_back(*, record: SendRecord | Any, campaign_id: int, now: datetime) -> bool:
    """A dead worker's CLAIMED record (it never reached the server) becomes DEFERRED, due now, and its account
    slot is given back, exactly once: the conditional update on the old claim token decides which caller does it.
    `record` is a SendRecord or an event mailing's MailingSend (same states and claim fields)."""
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


def stale_hand_over_settle(*, record: SendRecord | Any, reason: str) -> bool:
    """A dead worker's HANDED_OVER record may have been delivered: UNKNOWN, never retried automatically. It still
    counts against the account's limit."""
    return bool(
        type(record)
        .objects.filter(id=record.id, state=State.HANDED_OVER, claim_token=record.claim_token)
        .update(state=State.UNKNOWN, last_error=reason, claim_token=None, claimed_until=None)
    )


def send_failure_settle(
    *, mine: QuerySet, reservation: Reservation, result: DeliveryResult, email: str, attempts: int, finished: datetime
) -> datetime | None:
    """What a claimed send record becomes when its message was not delivered, or no verdict came: `mine` is
    the record filtered by our claim token. UNKNOWN keeps the account's slot (it may have been delivered); the
    others give it back. A bounce suppresses the address; an account's fault counts towards pausing it.
    Returns when a DEFERRED record may be retried."""
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
    retry_at = finished if account_error else finished + _backoff(attempts)
    mine.update(state=State.DEFERRED, next_attempt_at=retry_at, **common)
    if account_error or result.account_fault:
        account_record_failure(account_id=reservation.account_id, reason=result.detail, pause_now=account_error)
    return retry_at


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


# --- A batch ------------------------------------------------------------------------------------------------


def leads_process(
    *, lead_ids: list[int], sessions: SmtpSessions, account_filter: int | None = None
) -> dict[int, list[str]]:
    """Settles what each claimed lead can send now and sets when to look at it again: {lead id: outcomes}.

    A lead's recipients go one after another within its step; with no min wait to honour, the next one goes
    in the same batch. Safe to run twice, concurrently too: each (recipient, step) send record is claimed
    atomically, so only one caller ever hands a message to SMTP.
    """
    works = _batch_load(lead_ids)
    pending = [work for work in works if work.lead.state == Lead.State.IN_PROGRESS]
    for work in works:
        if work.lead.state != Lead.State.IN_PROGRESS:
            work.outcomes.append("not in progress")
    try:
        for _ in range(MAX_ROUNDS):
            if not pending:
                break
            now = clock.now()
            sends = _sends_plan(pending, now)
            for campaign_sends in _by_campaign(sends).values():
                _sends_run(campaign_sends, sessions=sessions, now=now, account_filter=account_filter)
            pending = [work for work in pending if work.again]
        for work in pending:
            work.done("too many recipients settled in one batch")
    finally:  # what was settled stands even if something unexpected stopped the batch
        _batch_finish(works)
    return {work.lead.id: work.outcomes for work in works}


def outcome_counts(per_lead: dict[int, list[str]]) -> Counter[str]:
    return Counter(outcome for outcomes in per_lead.values() for outcome in outcomes)


def _by_campaign(sends: list[Send]) -> dict[int, list[Send]]:
    grouped: dict[int, list[Send]] = defaultdict(list)
    for send in sends:
        grouped[send.lead.campaign_id].append(send)
    return grouped


def _sends_plan(works: list[LeadWork], now: datetime) -> list[Send]:
    """Each lead's next recipient to send to now; everything else about the lead is settled here."""
    campaigns = {work.lead.campaign_id: work.lead.campaign for work in works}
    fresh = Campaign.objects.filter(id__in=campaigns).values_list("id", "status", "ends_at")
    for campaign_id, status, ends_at in fresh:  # an operator may have paused it since the batch began
        campaigns[campaign_id].status, campaigns[campaign_id].ends_at = status, ends_at
    opens = {campaign_id: window_next_open(at=now, campaign=campaign) for campaign_id, campaign in campaigns.items()}
    emails_by_campaign: dict[int, list[str]] = defaultdict(list)
    for work in works:
        if work.state:
            emails_by_campaign[work.lead.campaign_id] += [recipient.email for recipient in work.state.recipients]
    suppressed = suppressed_among(emails=[email for emails in emails_by_campaign.values() for email in emails])
    contacted = {
        campaign_id: _contacted_elsewhere(emails, campaigns[campaign_id], now)
        for campaign_id, emails in emails_by_campaign.items()
    }

    sends = []
    for work in works:
        work.again = False
        campaign = campaigns[work.lead.campaign_id]
        if campaign.status != Campaign.Status.ACTIVE:
            work.done("campaign not active", next_due_at=now)  # picked up again when the campaign is resumed
        elif campaign.ends_at and campaign.ends_at <= now:
            work.done("campaign ended")
        elif work.step is None:
            work.done("no such step: finished", state=Lead.State.FINISHED, next_due_at=None)
        elif opens[campaign.id] > now:
            work.done("outside the send window", next_due_at=opens[campaign.id])
        else:
            send = _lead_plan(work, now, suppressed, contacted[campaign.id])
            if send is not None:
                sends.append(send)
    return sends


def _lead_plan(work: LeadWork, now: datetime, suppressed: set[str], contacted: set[str]) -> Send | None:
    lead, step, state = work.lead, work.step, work.state
    assert step is not None and state is not None
    for _ in range(len(state.recipients) + 1):
        choice = _next_recipient(lead, step, now, state)
        if choice is None:
            _lead_advance(work, step, now)
            return None
        if isinstance(choice, datetime):
            work.done("waiting", next_due_at=choice)
            return None
        recipient, record = choice.recipient, choice.record
        settle = _settled_without_smtp(recipient, record, suppressed, contacted)
        if settle is None:
            return Send(lead, step, recipient, record, earlier=work.earlier[recipient.id], work=work)
        final_state, reason, kind = settle
        _record_final(recipient=recipient, step=step, record=record, state=final_state, reason=reason, kind=kind)
        _step_state_reload(work)
    work.done("waiting", next_due_at=now)
    return None


def _settled_without_smtp(
    recipient: Recipient, record: SendRecord | None, suppressed: set[str], contacted: set[str]
) -> tuple[str, str, str] | None:
    """(state, reason, activity kind) for a recipient that gets no email, or None."""
    if record and record.state == State.DEFERRED and record.attempts >= MAX_DEFERRALS:
        return State.FAILED, f"gave up after {record.attempts} attempts: {record.last_error}", Activity.Kind.FAILED
    if recipient.status in (Recipient.Status.BOUNCED, Recipient.Status.UNSUBSCRIBED):
        return State.SKIPPED, f"recipient is {recipient.status}", Activity.Kind.SKIPPED
    if recipient.email.strip().lower() in suppressed:
        return State.SKIPPED, "address or domain is on the suppression list", Activity.Kind.SKIPPED
    if recipient.email.lower() in contacted:
        days = settings.CAMPAIGN_CROSS_CONTACT_DAYS
        return State.SKIPPED, f"contacted by another active campaign within {days} days", Activity.Kind.SKIPPED
    return None


def _lead_advance(
    work: LeadWork,
    step: SequenceStep,
    now: datetime,
    last_sent_at: datetime | None = None,
    outcome: str = "step completed",
) -> None:
    """Every recipient of the step is settled: next step at last send + its delay, moved into the window."""
    lead = work.lead
    work.activities.append(
        Activity(created_at=now, kind=Activity.Kind.STEP_COMPLETED, campaign_id=lead.campaign_id, lead=lead,
                 step_order=step.order)
    )  # fmt: skip
    sent = {"last_sent_at": last_sent_at} if last_sent_at else {}
    next_step = next((candidate for candidate in work.steps if candidate.order > step.order), None)
    if next_step is None:
        work.done(outcome, state=Lead.State.FINISHED, next_due_at=None, **sent)
        return
    base = last_sent_at or lead.last_sent_at or now
    due = window_next_open(at=base + timedelta(seconds=next_step.delay_seconds), campaign=lead.campaign)
    work.done(outcome, current_step=next_step.order, next_due_at=due, **sent)


def _batch_finish(works: list[LeadWork]) -> None:
    """Where every lead goes next, in one round trip (a lead an operator stopped meanwhile stays stopped); the
    batch's step-completed activities; campaigns whose last lead finished are completed."""
    rows_update(
        Lead, {work.lead.id: work.changes for work in works if work.changes}, only_if={"state": Lead.State.IN_PROGRESS}
    )
    activities = [activity for work in works for activity in work.activities]
    if activities:
        Activity.objects.bulk_create(activities)
    finished_in = {work.lead.campaign_id for work in works if work.changes.get("state") == Lead.State.FINISHED}
    for campaign_id in finished_in:
        campaign_complete_if_done(campaign_id=campaign_id)


def _sends_run(sends: list[Send], *, sessions: SmtpSessions, now: datetime, account_filter: int | None) -> None:
    """One campaign's sends of a round: reserve them all, then render, claim and deliver them in chunks of 1, 2,
    4 … up to 20: the first email leaves after one rendering, and a batch's rendering spreads over its SMTP
    waits instead of all happening at its start (where every thread of a busy pool would do it at once).

    Up to CAMPAIGN_SMTP_AWAITING_PER_THREAD handed-over messages wait for their verdicts at once, each on its
    own connection: against a server that answers the final dot late, the thread starts the next message
    instead of idling. Verdicts are recorded as they arrive: one that is slow to come holds up no other."""
    campaign_id = sends[0].lead.campaign_id
    avoid = tuple({send.record.account_id for send in sends if _retry_elsewhere(send)})
    reserved = accounts_reserve(
        campaign_id=campaign_id, count=len(sends), now=now, avoid_account_ids=avoid, account_filter=account_filter
    )
    reservations = [] if isinstance(reserved, NoAccount) else reserved
    unreserved = _reservations_assign(sends, reservations)
    if unreserved:
        why = reserved if isinstance(reserved, NoAccount) else accounts_next_opening(campaign_id=campaign_id, now=now)
        for send in unreserved:
            _work_done(send, f"no account: {why.reason}", next_due_at=why.retry_at)
    reserved_sends = [send for send in sends if send.reservation]
    awaiting: list[Awaiting] = []  # handed over, verdict not read yet; oldest first
    try:
        start, size = 0, 1
        while start < len(reserved_sends):
            chunk_at = clock.now()
            prepared = [send for send in reserved_sends[start : start + size] if _send_prepare(send, chunk_at)]
            for send in _sends_claim(prepared, chunk_at):
                while awaiting and _verdict_next(awaiting, sessions, wait=0):
                    pass  # verdicts already in: their connections are free again, no new one is opened
                if awaiting and not sessions.has_free(send.reservation.account):
                    _verdict_next(awaiting, sessions, wait=NEW_CONNECTION_PATIENCE)
                while len(awaiting) >= settings.CAMPAIGN_SMTP_AWAITING_PER_THREAD:
                    _verdict_next(awaiting, sessions)
                started = _send_deliver(send, sessions)
                if isinstance(started, DeliveryResult):
                    _send_settle(send, started)
                else:
                    awaiting.append(Awaiting(send, started, time.monotonic()))
            start, size = start + size, min(size * 2, CLAIM_CHUNK)
    finally:  # every handed-over message gets its verdict read and recorded, whatever stopped the loop
        while awaiting:
            _verdict_next(awaiting, sessions)


def _retry_elsewhere(send: Send) -> bool:
    return bool(send.record and send.record.account_id and send.record.state == State.DEFERRED)


def _reservations_assign(sends: list[Send], reservations: list[Reservation]) -> list[Send]:
    """Gives each send a reservation, a retried send one on another account where possible; returns the rest."""
    left = list(reservations)
    for send in sorted(sends, key=lambda s: not _retry_elsewhere(s)):
        if not left:
            break
        avoid = send.record.account_id if _retry_elsewhere(send) else None
        choice = next((r for r in left if r.account_id != avoid), left[0])
        left.remove(choice)
        send.reservation = choice
    return [send for send in sends if send.reservation is None]


def _work_done(send: Send, outcome: str, **changes) -> None:
    if send.work is not None:
        send.work.done(outcome, **changes)


def _send_prepare(send: Send, now: datetime) -> bool:
    """Renders the exact message. A template error fails only this recipient (the lead goes on)."""
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
            to_name=send.recipient.name,
            message_id=message_id,
            date=now,
            unsubscribe_url=unsubscribe_url(send.recipient),
            references=references,
        )
        send.message_text = message.as_string()
    except (TemplateRenderError, ValueError, TypeError) as error:
        reservation_release(reservation=send.reservation)
        _record_final(
            recipient=send.recipient,
            step=send.step,
            record=send.record,
            state=State.FAILED,
            reason=f"template error: {error}",
            kind=Activity.Kind.TEMPLATE_ERROR,
        )
        if send.work is not None:
            _step_state_reload(send.work)
            send.work.again = True
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


def _sends_claim(sends: list[Send], now: datetime) -> list[Send]:
    """Commits the claims (state CLAIMED, our token, the Message-ID and the message) in one transaction; a send
    another worker claimed first is dropped and its reservation given back: a new record loses on the unique
    constraint, a DEFERRED one on the conditional update."""
    fresh = [send for send in sends if send.record is None]
    try:
        with transaction.atomic():
            SendRecord.objects.bulk_create([send.claimed for send in fresh])
            won = fresh + [send for send in sends if send.record is not None and _claim_retry(send)]
    except IntegrityError:  # a concurrent worker got one of them: claim one by one
        won = [send for send in sends if _claim_one(send)]
    won_ids = {id(send) for send in won}
    for send in sends:
        if id(send) not in won_ids:
            assert send.reservation is not None
            reservation_release(reservation=send.reservation)
            _work_done(send, "claimed by another worker")
    return [send for send in sends if id(send) in won_ids]


def _claim_retry(send: Send) -> bool:
    assert send.record is not None and send.claimed is not None
    values = {name: getattr(send.claimed, name) for name in _CLAIM_FIELDS}
    if not SendRecord.objects.filter(id=send.record.id, state=State.DEFERRED).update(**values):
        return False
    send.claimed.id = send.record.id
    return True


def _claim_one(send: Send) -> bool:
    assert send.claimed is not None
    try:
        with transaction.atomic():
            if send.record is not None:
                return _claim_retry(send)
            send.claimed.save(force_insert=True)
            return True
    except IntegrityError:
        send.claimed.pk = None
        return False


def _send_deliver_and_record(send: Send, sessions: SmtpSessions) -> str:
    started = _send_deliver(send, sessions)
    if isinstance(started, DeliveryResult):
        return _send_settle(send, started)
    db_connection_release()  # not held while the server takes its time to answer the final dot
    return _send_settle(send, _send_verdict(started, sessions))


def _send_settle(send: Send, result: DeliveryResult) -> str:
    """Records the result and moves the send's lead on."""
    outcome = _send_record_result(send, result)
    work = send.work
    if work is None:
        return outcome
    if result.outcome in (Outcome.SENT, Outcome.UNKNOWN):
        _lead_after_send(work, send, outcome)
    elif result.outcome in (Outcome.DEFERRED, Outcome.ACCOUNT_ERROR):
        assert send.claimed is not None
        work.done(outcome, next_due_at=send.claimed.next_attempt_at)
    else:
        work.outcomes.append(outcome)
        _step_state_reload(work)
        work.again = True  # bounced or failed: the next recipient may go now
    return outcome


def _send_deliver(send: Send, sessions: SmtpSessions) -> DeliveryResult | smtplib.SMTP:
    """Hands the message over: the connection now awaiting its verdict, or why nothing (or no verdict) came."""
    assert send.claimed is not None and send.reservation is not None
    record_id, token = send.claimed.id, send.token

    def hand_over() -> bool:
        params = {"record": record_id, "token": token, "at": clock.now(), **_STATES}
        return execute_prepared(_HAND_OVER_SQL, params) == 1

    account = send.reservation.account
    if esp_account(account):  # an API call: its answer is the verdict, nothing left awaiting

        def hand_over_released() -> bool:
            handed_over = hand_over()
            db_connection_release()  # not held during the API call
            return handed_over

        return esp_send(account=account, message=send.message_text.encode(), on_handover=hand_over_released)
    if not sessions.has_free(account):
        db_connection_release()  # not held while connecting (TCP, TLS, AUTH); MAIL/RCPT/DATA on an open one are quick
    try:
        connection = sessions.get(account)
    except (smtplib.SMTPException, OSError) as error:
        return smtp_classify_connect_error(error)
    refused = smtp_hand_over(
        connection,
        envelope_from=account.email,
        recipient=send.recipient.email,
        message_bytes=send.message_text.encode(),
        on_handover=hand_over,
    )
    if refused is not None:
        return refused
    sessions.awaiting.add(id(connection))
    return connection


def _send_verdict(connection: smtplib.SMTP, sessions: SmtpSessions) -> DeliveryResult:
    try:
        return smtp_verdict(connection)
    finally:
        sessions.awaiting.discard(id(connection))


@dataclass(frozen=True)
class Awaiting:
    send: Send
    connection: smtplib.SMTP
    since: float  # time.monotonic() when the final dot went


def _verdict_next(awaiting: list[Awaiting], sessions: SmtpSessions, *, wait: float | None = None) -> bool:
    """Records the first verdict to arrive, waiting up to `wait` seconds (None: as long as the oldest may still
    take): whether one was recorded. The oldest is given up on (UNKNOWN) once it has waited the SMTP timeout."""
    oldest = awaiting[0]
    timeout = settings.CAMPAIGN_SMTP_TIMEOUT
    left = oldest.since + timeout - time.monotonic()
    patience = left if wait is None else min(wait, left)
    if patience > 0.001:
        db_connection_release()  # not held while servers take their time to answer final dots
    index = smtp_first_answered([entry.connection for entry in awaiting], timeout=patience)
    if index is None:
        if left > patience:
            return False
        awaiting.pop(0)
        sessions.awaiting.discard(id(oldest.connection))
        _send_settle(oldest.send, smtp_no_verdict(oldest.connection, waited=timeout))
        return True
    entry = awaiting.pop(index)
    _send_settle(entry.send, _send_verdict(entry.connection, sessions))
    return True


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
_SENT_SQL = """
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
    )
    INSERT INTO campaigns_activity
           (created_at, kind, campaign_id, lead_id, recipient_id, account_id, step_order, message, detail)
    SELECT %(at)s, %(kind)s, %(campaign)s, %(lead)s, %(recipient)s, %(account)s, %(step_order)s, %(message)s,
           %(detail)s
      FROM record"""


def _send_record_result(send: Send, result: DeliveryResult) -> str:
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
            execute_prepared(
                _SENT_SQL,
                {
                    "record": record.id, "token": send.token, "at": finished, "recipient": recipient.id,
                    "step_order": send.step.order, "campaign": send.lead.campaign_id, "lead": send.lead.id,
                    "account": account.id, "message": f"sent to {recipient.email}", "detail": Jsonb(detail),
                    "kind": Activity.Kind.SENT, "provider_message_id": result.provider_message_id, **_STATES,
                },
            )  # fmt: skip
            reservation_commit(reservation=reservation, finished_at=finished, delivered=True)
        record.state, record.sent_at = State.SENT, finished
        record.provider_message_id = result.provider_message_id
        return "sent"
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
    if result.outcome is Outcome.UNKNOWN:
        return "unknown"
    return "deferred" if retry_at is not None else "settled"


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


def _lead_after_send(work: LeadWork, send: Send, outcome: str) -> None:
    """The send counts as attempted: the step's next recipient after the min wait, or the next step."""
    assert send.claimed is not None and send.reservation is not None and work.state is not None
    finished = send.claimed.sent_at or clock.now()
    work.state.records[send.recipient.id] = send.claimed
    pending = _next_recipient(work.lead, send.step, finished, work.state)
    if pending is None:
        _lead_advance(work, send.step, finished, last_sent_at=finished, outcome=outcome)
    elif isinstance(pending, NextRecipient) and not send.reservation.wait_seconds:
        work.done(outcome, last_sent_at=finished)
        work.again = True
    else:
        wait = timedelta(seconds=send.reservation.wait_seconds)
        due = pending if isinstance(pending, datetime) else finished + wait
        work.done(outcome, last_sent_at=finished, next_due_at=window_next_open(at=due, campaign=work.lead.campaign))


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


def unknown_send_resolve(*, records: QuerySet, record_id: int, action: str, actor: str) -> Any:
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
    return record


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
        _record_activity(
            record,
            kind=Activity.Kind.STATUS_CHANGED,
            message=f"unknown send resolved by {actor}: {action}",
            detail={"send_record": record.id, "action": action},
        )
    return record


def send_record_resend(*, record_id: int, sessions: SmtpSessions) -> str:
    """Sends a DEFERRED record of any step again (an operator's resend), through the arbiter as usual."""
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
    earlier = SendRecord.objects.filter(recipient=record.recipient, step__order__lt=record.step.order, state=State.SENT)
    send = Send(
        record.lead,
        record.step,
        record.recipient,
        record,
        earlier=list(earlier.order_by("step__order").defer("message")),
        reservation=reserved[0],
    )
    if not _send_prepare(send, now):
        return "settled"
    if not _sends_claim([send], now):
        return "claimed by another worker"
    outcome = _send_deliver_and_record(send, sessions)
    if outcome in ("sent", "unknown"):
        Lead.objects.filter(id=record.lead_id).update(last_sent_at=clock.now())
    return outcome
