"""A batch of claimed leads: load, plan, send, advance, finish.

A batch acts only on the leads whose claim it carries: it swaps the dispatcher's claim token for its own at
once (so of two copies of one batch only one acts, and a copy whose claim the dispatcher has since renewed
does nothing), renews it each round, and clears it when it writes where the leads go next. It never sends a
step before the step is due (`Lead.step_due_at`), whatever the broker delivered late.

It loads its leads, their campaign's steps, recipients and send records once, plans each lead's next
recipient, reserves accounts for all of a campaign's sends in one arbiter transaction and hands them to `sends`
(render, claim, deliver, record). Each send tells its lead how it ended (`_lead_after_settled`); where the
leads go next is written once, at the end of the batch. A lead's claim lease (the dispatcher's) covers it
until then, so no one else moves it meanwhile.

Safe to run twice, concurrently too: each (recipient, step) send record is claimed atomically, so only one
caller ever hands a message over; a dead worker's records are settled by the ledger when the lead is next seen.
"""

import enum
import logging
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import connection, transaction
from django.db.models.functions import Lower

from campaigns.models import (
    Activity,
    Campaign,
    CampaignAccount,
    Lead,
    Recipient,
    SenderAccount,
    SendRecord,
    SequenceStep,
)
from campaigns.services.activities import activity_record
from campaigns.services.ledger import attempts_exhausted, stale_claim_give_back, stale_hand_over_settle
from campaigns.services.live import campaign_live_changed, campaign_live_progress
from campaigns.services.outcomes import SendOutcome
from campaigns.services.sends import Send, send_record_activity, send_record_final, sends_deliver
from campaigns.services.smtp import SmtpSessions
from campaigns.services.suppressions import suppressed_among
from campaigns.services.throttling import (
    NoAccount,
    Reservation,
    accounts_next_opening,
    accounts_reserve,
    send_lease,
)
from campaigns.services.windows import window_next_open
from emailsys import clock
from emailsys.db import rows_update
from emailsys.live import live_version_bump
from emailsys.metrics import event_count

logger = logging.getLogger(__name__)

MAX_ROUNDS = 100  # a batch goes round its leads again while one has a recipient to send to right now
State = SendRecord.State
MAYBE_DELIVERED = (State.SENT, State.UNKNOWN)  # the recipient may have it: later steps thread on it


class LeadOutcome(enum.StrEnum):
    """Why a lead sent nothing (more) in this batch; its sends' outcomes are `SendOutcome`s."""

    NOT_IN_PROGRESS = "not in progress"
    STALE_CLAIM = "stale claim: another copy or a newer claim holds the lead"
    NOT_DUE = "step not due yet"
    REPLIED = "a recipient replied: lead stopped"
    CAMPAIGN_NOT_ACTIVE = "campaign not active"
    CAMPAIGN_ENDED = "campaign ended"
    FINISHED = "no such step: finished"
    OUTSIDE_WINDOW = "outside the send window"
    WAITING = "waiting"
    NO_ACCOUNT = "no account"
    STEP_COMPLETED = "step completed"
    TOO_MANY_SETTLED = "too many recipients settled in one batch"


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
    earlier: dict[int, list[SendRecord]]  # recipient id → its sent (or maybe sent) earlier steps (threading)
    changes: dict = field(default_factory=dict)  # Lead fields to write at the end of the batch
    activities: list[Activity] = field(default_factory=list)  # step completed, written with the changes
    outcomes: list[str] = field(default_factory=list)  # SendOutcome and LeadOutcome members
    again: bool = False  # another recipient can go right now: plan this lead again in the next round
    send: Send | None = None  # this round's email, if the lead has one to send now

    @property
    def step(self) -> SequenceStep | None:
        return next((step for step in self.steps if step.order == self.lead.current_step), None)

    def done(self, outcome: str, **changes) -> None:
        self.outcomes.append(outcome)
        self.changes.update(changes)
        self.again = False


def lead_batch_send(
    *, lead_ids: list[int], sessions: SmtpSessions, account_filter: int | None = None, claim: str | None = None
) -> dict[int, list[str]]:
    """Sends what each claimed lead can send now and sets when to look at it again: {lead id: outcomes}.

    `claim` is the dispatcher's token for these leads; without one, only leads nobody has claimed are taken
    (an operator's or a test's direct call). A lead's recipients go one after another within its step; with no
    min wait to honour, the next one goes in the same batch.
    """
    token = uuid.uuid4()
    held = _claim_take(lead_ids, claim=claim, token=token, now=clock.now())
    works = _batch_load([lead_id for lead_id in lead_ids if lead_id in held])
    outcomes = _not_held_outcomes([lead_id for lead_id in dict.fromkeys(lead_ids) if lead_id not in held])
    pending = list(works)
    try:
        for round_number in range(MAX_ROUNDS):
            if not pending:
                break
            now = clock.now()
            if round_number:  # the first round's claim was just taken
                pending = _claim_keep(pending, token=token, now=now)
            sending = _sends_plan(pending, now)
            for campaign_id, campaign_works in _by_campaign(sending).items():
                reserved = _sends_reserve(
                    campaign_works, campaign_id=campaign_id, now=now, account_filter=account_filter
                )
                sends_deliver(reserved, sessions=sessions)
            pending = [work for work in pending if work.again]
        for work in pending:
            work.done(LeadOutcome.TOO_MANY_SETTLED)
    finally:  # what was settled stands even if something unexpected stopped the batch
        _batch_finish(works, token=token)
    return {**outcomes, **{work.lead.id: work.outcomes for work in works}}


def outcome_counts(per_lead: dict[int, list[str]]) -> Counter[str]:
    return Counter(str(outcome) for outcomes in per_lead.values() for outcome in outcomes)


# --- claim -----------------------------------------------------------------------------------------------------

_CLAIM_SQL = """
    UPDATE campaigns_lead SET claim_token = %s, next_due_at = %s
     WHERE id = ANY(%s) AND state = %s AND {claimed}
 RETURNING id"""


def _claim_swap(lead_ids: list[int], *, current: uuid.UUID | str | None, token: uuid.UUID, now: datetime) -> set[int]:
    """Swaps the claim `current` (None: no claim) for `token` and renews the lease, in one conditional UPDATE:
    the in-progress leads this batch now holds."""
    if not lead_ids:
        return set()
    claimed = "claim_token IS NULL" if current is None else "claim_token = %s"
    params: list = [token, now + send_lease(), list(lead_ids), Lead.State.IN_PROGRESS]
    if current is not None:
        params.append(uuid.UUID(str(current)))
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL.format(claimed=claimed), params)
        return {row[0] for row in cursor.fetchall()}


def _claim_take(lead_ids: list[int], *, claim: str | None, token: uuid.UUID, now: datetime) -> set[int]:
    try:
        return _claim_swap(lead_ids, current=claim, token=token, now=now)
    except ValueError:  # not a token at all: holds nothing
        logger.warning("send batch with a malformed claim %r ignored", claim)
        return set()


def _claim_keep(works: list[LeadWork], *, token: uuid.UUID, now: datetime) -> list[LeadWork]:
    """Before each round: renews the lease of the leads still ours and still in progress; drops the others (an
    operator stopped the lead, or the dispatcher re-claimed it after the lease passed: its new batch acts)."""
    held = _claim_swap([work.lead.id for work in works], current=token, token=token, now=now)
    for work in works:
        if work.lead.id not in held:
            work.done(LeadOutcome.STALE_CLAIM)
            work.changes.clear()  # not ours to write
    return [work for work in works if work.lead.id in held]


def _not_held_outcomes(lead_ids: list[int]) -> dict[int, list[str]]:
    """Why a lead of the batch was not taken: it left progress, or its claim is not this batch's (logged and
    counted: a redelivered, duplicated or outlived copy)."""
    if not lead_ids:
        return {}
    states = dict(Lead.objects.filter(id__in=lead_ids).values_list("id", "state"))
    stale = [lead_id for lead_id, state in states.items() if state == Lead.State.IN_PROGRESS]
    if stale:
        logger.info("send batch: %s lead(s) skipped, their claim is not this batch's: %s", len(stale), stale[:20])
        event_count("stale_batch_leads", len(stale))
    return {
        lead_id: [LeadOutcome.STALE_CLAIM if lead_id in stale else LeadOutcome.NOT_IN_PROGRESS]
        for lead_id in lead_ids
        if lead_id in states
    }


# --- load ------------------------------------------------------------------------------------------------------


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
            if current and record.state in MAYBE_DELIVERED and orders.get(record.step_id, 0) < current.order:
                work.earlier[record.recipient_id].append(record)
        if lead.sender_account_id is None:  # a crash between the first send and its pin: the records know
            first = min((r for r in records[lead_id] if r.state in MAYBE_DELIVERED and r.account_id),
                        key=lambda r: (r.sent_at or r.updated_at, r.id), default=None)  # fmt: skip
            if first is not None:
                _sender_pin(work, first.account_id)
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


# --- plan ------------------------------------------------------------------------------------------------------


def _sends_plan(works: list[LeadWork], now: datetime) -> list[LeadWork]:
    """Each lead's next recipient to send to now (`work.send`): the leads with one. Everything else about a lead
    is settled here."""
    campaigns = {work.lead.campaign_id: work.lead.campaign for work in works}
    fresh = Campaign.objects.filter(id__in=campaigns).values_list("id", "status", "ends_at")
    for campaign_id, status, ends_at in fresh:  # an operator may have paused it since the batch began
        campaigns[campaign_id].status, campaigns[campaign_id].ends_at = status, ends_at
    _recipients_refresh(works)
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

    sending = []
    for work in works:
        work.again, work.send = False, None
        campaign = campaigns[work.lead.campaign_id]
        if campaign.status != Campaign.Status.ACTIVE:
            work.done(LeadOutcome.CAMPAIGN_NOT_ACTIVE, next_due_at=now)  # picked up again when it is resumed
        elif campaign.ends_at and campaign.ends_at <= now:
            work.done(LeadOutcome.CAMPAIGN_ENDED)
        elif work.step is None:
            work.done(LeadOutcome.FINISHED, state=Lead.State.FINISHED, next_due_at=None)
        elif work.lead.step_due_at and work.lead.step_due_at > now:  # a late copy of an old claim, or a clock
            work.done(LeadOutcome.NOT_DUE, next_due_at=work.lead.step_due_at)
        elif campaign.stop_on_reply and (replied := _replied(work)):
            reason = f"{replied.email} replied"
            work.activities.append(
                Activity(created_at=now, kind=Activity.Kind.STATUS_CHANGED, campaign_id=campaign.id, lead=work.lead,
                         recipient=replied, message=f"Lead stopped: {reason}",
                         detail={"from": Lead.State.IN_PROGRESS, "to": Lead.State.STOPPED})
            )  # fmt: skip
            work.done(LeadOutcome.REPLIED, state=Lead.State.STOPPED, stop_reason=reason, next_due_at=None)
        elif opens[campaign.id] > now:
            work.done(LeadOutcome.OUTSIDE_WINDOW, next_due_at=opens[campaign.id])
        else:
            work.send = _lead_plan(work, now, suppressed, contacted[campaign.id])
            if work.send is not None:
                sending.append(work)
    return sending


def _recipients_refresh(works: list[LeadWork]) -> None:
    """Recipients' statuses as they are now, one query a round: a reply, bounce or unsubscribe recorded while the
    batch runs counts before its next send to that lead."""
    recipients = {recipient.id: recipient for work in works if work.state for recipient in work.state.recipients}
    if recipients:
        for recipient_id, status in Recipient.objects.filter(id__in=recipients).values_list("id", "status"):
            recipients[recipient_id].status = status


def _replied(work: LeadWork) -> Recipient | None:
    recipients = work.state.recipients if work.state else []
    return next((r for r in recipients if r.status == Recipient.Status.REPLIED), None)


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


def _lead_plan(work: LeadWork, now: datetime, suppressed: set[str], contacted: set[str]) -> Send | None:
    lead, step, state = work.lead, work.step, work.state
    assert step is not None and state is not None
    for _ in range(len(state.recipients) + 1):
        choice = _next_recipient(step, now, state)
        if choice is None:
            _lead_advance(work, step, now)
            return None
        if isinstance(choice, datetime):
            work.done(LeadOutcome.WAITING, next_due_at=choice)
            return None
        recipient, record = choice.recipient, choice.record
        settle = _settled_without_smtp(recipient, record, suppressed, contacted)
        if settle is None:
            on_settled = partial(_lead_after_settled, work)
            return Send(lead, step, recipient, record, earlier=work.earlier[recipient.id], on_settled=on_settled)
        final_state, reason, kind = settle
        send_record_final(recipient=recipient, step=step, record=record, state=final_state, reason=reason, kind=kind)
        _step_state_reload(work)
    work.done(LeadOutcome.WAITING, next_due_at=now)
    return None


@dataclass(frozen=True)
class NextRecipient:
    recipient: Recipient
    record: SendRecord | None


def _next_recipient(step: SequenceStep, now: datetime, state: StepState) -> NextRecipient | datetime | None:
    """The recipient to send to now, or the time to look again (one is waiting), or None (step is done).

    Also settles records whose worker died (the ledger's rules): CLAIMED is given back for a retry, HANDED_OVER
    becomes UNKNOWN.
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
            _settle_as_unknown(record, "the worker stopped after handing the message to SMTP")
            record.state = State.UNKNOWN
            continue
        # CLAIMED, lease expired: it never reached the server.
        if not stale_claim_give_back(record=record, campaign_id=record.campaign_id, now=now):
            return now  # recovered concurrently; look again
        recovered = SendRecord.objects.defer("message").get(id=record.id)
        state.records[recipient.id] = recovered
        return NextRecipient(recipient, recovered)
    return None


def _settle_as_unknown(record: SendRecord, reason: str) -> None:
    if stale_hand_over_settle(record=record, reason=reason):
        send_record_activity(
            record,
            kind=Activity.Kind.UNKNOWN,
            message=f"outcome unknown: {reason}",
            detail={"send_record": record.id, "message_id": record.message_id},
        )


def _settled_without_smtp(
    recipient: Recipient, record: SendRecord | None, suppressed: set[str], contacted: set[str]
) -> tuple[str, str, str] | None:
    """(state, reason, activity kind) for a recipient that gets no email, or None."""
    if attempts_exhausted(record):
        assert record is not None
        return State.FAILED, f"gave up after {record.attempts} attempts: {record.last_error}", Activity.Kind.FAILED
    if recipient.status not in Recipient.MAILABLE_STATUSES:
        return State.SKIPPED, f"recipient is {recipient.status}", Activity.Kind.SKIPPED
    if recipient.email.strip().lower() in suppressed:
        return State.SKIPPED, "address or domain is on the suppression list", Activity.Kind.SKIPPED
    if recipient.email.lower() in contacted:
        days = settings.CAMPAIGN_CROSS_CONTACT_DAYS
        return State.SKIPPED, f"contacted by another active campaign within {days} days", Activity.Kind.SKIPPED
    return None


def _by_campaign(works: list[LeadWork]) -> dict[int, list[LeadWork]]:
    grouped: dict[int, list[LeadWork]] = defaultdict(list)
    for work in works:
        grouped[work.lead.campaign_id].append(work)
    return grouped


# --- reserve ---------------------------------------------------------------------------------------------------


def _sends_reserve(works: list[LeadWork], *, campaign_id: int, now: datetime, account_filter: int | None) -> list[Send]:
    """Reserves accounts for one campaign's sends of a round: the reserved sends. A lead's sends go through the
    account its conversation is with (`_sender_required`), the others round robin; a lead whose account has
    no room waits for it."""
    accounts = _campaign_accounts(campaign_id)
    groups: dict[int | None, list[LeadWork]] = defaultdict(list)
    for work in works:
        groups[_sender_required(work, accounts)].append(work)
    reserved: list[Send] = []
    for account_id, group in groups.items():
        if account_id is None:
            reserved += _group_reserve(group, campaign_id=campaign_id, now=now, account_filter=account_filter)
        elif accounts[account_id] != SenderAccount.Status.ACTIVE or account_filter not in (None, account_id):
            for work in group:  # paused (or not the operator's chosen account): the lead waits for its sender
                work.done(LeadOutcome.NO_ACCOUNT, next_due_at=now + SENDER_PAUSED_RETRY)
        else:
            reserved += _group_reserve(group, campaign_id=campaign_id, now=now, account_filter=account_id)
    return reserved


SENDER_PAUSED_RETRY = timedelta(minutes=1)


def _campaign_accounts(campaign_id: int) -> dict[int, str]:
    """The campaign's accounts and their statuses: {account id: status}."""
    return dict(CampaignAccount.objects.filter(campaign_id=campaign_id).values_list("account_id", "account__status"))


def _sender_required(work: LeadWork, accounts: dict[int, str]) -> int | None:
    """The account this lead's send must go from, or None (any). Sticky: the lead's first sender, for every step
    and recipient. Rotate: a threaded step still replies from the account of the recipient's previous email.
    An account disabled or removed from the campaign lets the lead go on from another (said in its activities)."""
    send = work.send
    assert send is not None
    if work.lead.campaign.sender_policy == Campaign.SenderPolicy.STICKY:
        wanted = work.lead.sender_account_id
    elif send.step.threaded and send.earlier:
        wanted = send.earlier[-1].account_id
    else:
        return None
    if wanted is None or accounts.get(wanted, SenderAccount.Status.DISABLED) != SenderAccount.Status.DISABLED:
        return wanted
    why = "is no longer one of the campaign's accounts" if wanted not in accounts else "is disabled"
    if Lead.objects.filter(id=work.lead.id, sender_account_id=wanted).update(sender_account=None):
        activity_record(
            kind=Activity.Kind.SENDER_CHANGED, campaign=work.lead.campaign_id, lead=work.lead, account=wanted,
            message=f"the lead's sender (account {wanted}) {why}: its next email goes from another account",
        )  # fmt: skip
    work.lead.sender_account_id = None
    return None


def _sender_pin(work: LeadWork, account_id: int) -> None:
    """The account of the lead's first email becomes its sender (set once)."""
    Lead.objects.filter(id=work.lead.id, sender_account__isnull=True).update(sender_account_id=account_id)
    work.lead.sender_account_id = account_id


def _group_reserve(works: list[LeadWork], *, campaign_id: int, now: datetime, account_filter: int | None) -> list[Send]:
    """Reserves accounts for sends in one arbiter transaction: the reserved sends. A lead whose send got no room
    waits until an account opens."""
    sends = [work.send for work in works if work.send is not None]
    avoid = tuple({send.record.account_id for send in sends if _retry_elsewhere(send)})
    reserved = accounts_reserve(
        campaign_id=campaign_id, count=len(sends), now=now, avoid_account_ids=avoid, account_filter=account_filter
    )
    reservations = [] if isinstance(reserved, NoAccount) else reserved
    unreserved = _reservations_assign(sends, reservations)
    if unreserved:
        own = {reservation.hold_id for reservation in reservations if reservation.hold_id is not None}
        why = (
            reserved
            if isinstance(reserved, NoAccount)
            else accounts_next_opening(campaign_id=campaign_id, now=now, own_hold_ids=own)
        )
        logger.info("campaign %s: %s lead(s) wait, no account: %s", campaign_id, len(unreserved), why.reason)
        waiting = {id(send) for send in unreserved}
        for work in works:
            if id(work.send) in waiting:
                work.done(LeadOutcome.NO_ACCOUNT, next_due_at=why.retry_at)
    return [send for send in sends if send.reservation]


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


# --- advance ---------------------------------------------------------------------------------------------------


def _lead_after_settled(work: LeadWork, send: Send, outcome: SendOutcome) -> None:
    """Where a send's lead goes once the send ended (its `on_settled` hook)."""
    if outcome in (SendOutcome.SENT, SendOutcome.UNKNOWN):
        _lead_after_send(work, send, outcome)
    elif outcome is SendOutcome.DEFERRED:
        assert send.claimed is not None
        work.done(outcome, next_due_at=send.claimed.next_attempt_at)
    elif outcome is SendOutcome.CLAIMED_ELSEWHERE:
        work.done(outcome)
    elif outcome in (SendOutcome.WITHDRAWN, SendOutcome.LAPSED):  # look again at once: the next plan sees the change
        work.done(outcome, next_due_at=clock.now())
    else:  # bounced, failed or not buildable: the next recipient may go now
        work.outcomes.append(outcome)
        _step_state_reload(work)
        work.again = True


def _lead_after_send(work: LeadWork, send: Send, outcome: str) -> None:
    """The send counts as attempted: the step's next recipient after the min wait, or the next step."""
    assert send.claimed is not None and send.reservation is not None and work.state is not None
    if work.lead.sender_account_id is None:
        _sender_pin(work, send.reservation.account_id)
    finished = send.claimed.sent_at or clock.now()
    work.state.records[send.recipient.id] = send.claimed
    pending = _next_recipient(send.step, finished, work.state)
    if pending is None:
        _lead_advance(work, send.step, finished, last_sent_at=finished, outcome=outcome)
    elif isinstance(pending, NextRecipient) and not send.reservation.wait_seconds:
        work.done(outcome, last_sent_at=finished)
        work.again = True
    else:
        wait = timedelta(seconds=send.reservation.wait_seconds)
        due = pending if isinstance(pending, datetime) else finished + wait
        work.done(outcome, last_sent_at=finished, next_due_at=window_next_open(at=due, campaign=work.lead.campaign))


def _lead_advance(
    work: LeadWork,
    step: SequenceStep,
    now: datetime,
    last_sent_at: datetime | None = None,
    outcome: str = LeadOutcome.STEP_COMPLETED,
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
    work.done(outcome, current_step=next_step.order, next_due_at=due, step_due_at=due, **sent)


# --- finish ----------------------------------------------------------------------------------------------------


def _batch_finish(works: list[LeadWork], *, token: uuid.UUID) -> None:
    """Where every lead still ours goes next, its claim cleared, in one round trip (a lead an operator stopped
    meanwhile stays stopped); the batch's activities; campaigns whose last lead finished are completed."""
    rows_update(
        Lead,
        {work.lead.id: {**work.changes, "claim_token": None} for work in works},
        only_if={"state": Lead.State.IN_PROGRESS, "claim_token": token},
    )
    activities = [activity for work in works for activity in work.activities]
    if activities:
        Activity.objects.bulk_create(activities)
    for campaign_id in {work.lead.campaign_id for work in works}:  # leads by state and step, next due time
        campaign_live_progress(campaign_id)
    finished_in = {work.lead.campaign_id for work in works if work.changes.get("state") == Lead.State.FINISHED}
    for campaign_id in finished_in:
        campaign_complete_if_done(campaign_id=campaign_id)


def campaign_complete_if_done(*, campaign_id: int) -> bool:
    """An active campaign whose every lead finished or stopped is completed."""
    if Lead.objects.filter(campaign_id=campaign_id, state=Lead.State.IN_PROGRESS).exists():
        return False
    with transaction.atomic():
        changed = Campaign.objects.filter(id=campaign_id, status=Campaign.Status.ACTIVE).update(
            status=Campaign.Status.COMPLETED, **live_version_bump()
        )
        if changed:
            activity_record(
                kind=Activity.Kind.STATUS_CHANGED,
                campaign=campaign_id,
                message="campaign completed: every lead finished or stopped",
                detail={"from": "active", "to": "completed"},
            )
            campaign_live_changed(campaign_id)
    return bool(changed)
