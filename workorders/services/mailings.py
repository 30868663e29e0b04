"""One event-mailing email, sent exactly once with the campaign engine's protocol: its arbiter (`throttling`),
its delivery (`delivery`, SMTP or an ESP) and its send-attempt ledger (`ledger`).

`mailing_send` reserves the account (`account_reserve_for_mailing`: the account's limits hold across campaigns
and mailings), builds the message (`message_build`, with List-Unsubscribe), commits the CLAIMED `MailingSend`
before anything is sent, commits HANDED_OVER at the point of no return (the delivery's `on_handover` hook),
then records the verdict. No transaction is open during SMTP. A crash leaves the record saying what happened: CLAIMED →
nothing left, retried; HANDED_OVER → UNKNOWN, never retried automatically (`mailing_sends_settle_stale`).
"""

import copy
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from campaigns.models import SenderAccount
from campaigns.services.delivery import deliver
from campaigns.services.ledger import (
    MAX_DEFERRALS,
    send_failure_settle,
    stale_claim_give_back,
    stale_hand_over_settle,
    unknown_send_resolve,
)
from campaigns.services.outcomes import DeliveryResult, Outcome, SendOutcome
from campaigns.services.smtp import SmtpSessions
from campaigns.services.templating import (
    SEND_REFERENCE_HEADER,
    RenderedEmail,
    message_build,
    message_id_new,
    send_reference,
)
from campaigns.services.throttling import (
    NoAccount,
    Reservation,
    account_reserve_for_mailing,
    reservation_commit,
    reservation_holds_take,
    reservation_release_unclaimed,
    send_lease,
)
from emailsys import clock
from workorders.models import Contact, MailingSend, WorkOrder
from workorders.services.unsubscribes import unsubscribe_link_text, unsubscribe_url

State = MailingSend.State
# Prepare renders this where templates say {{ name }}; each email gets the contact's name in its place.
NAME_MARKER = "[[contact_name]]"


@dataclass(frozen=True)
class Addressee:
    """Who one email goes to: a contact (real send) or a tester (`test_run` set)."""

    email: str
    name: str
    language: str
    contact: Contact | None = None
    record: MailingSend | None = None  # an earlier DEFERRED attempt
    test_run: int | None = None


def mailing_key_sends(*, work_order: WorkOrder) -> QuerySet[MailingSend]:
    """The real sends of the work order's mailing key, whichever work order made them."""
    return MailingSend.objects.filter(
        event_code=work_order.event.code, sub_event=work_order.sub_event, stage=work_order.stage, is_test=False
    )


def _personalised(prepared: RenderedEmail, *, name: str) -> RenderedEmail:
    from html import escape

    return RenderedEmail(
        subject=prepared.subject.replace(NAME_MARKER, name),
        text=prepared.text.replace(NAME_MARKER, name),
        html=prepared.html.replace(NAME_MARKER, escape(name)),
    )


def _sender(work_order: WorkOrder, account: SenderAccount) -> SenderAccount:
    """The account as the message shows it: the work order's from name, if any, over the account's."""
    if not work_order.from_name:
        return account
    shown = copy.copy(account)
    shown.from_name = work_order.from_name
    return shown


def mailing_send(
    *, work_order: WorkOrder, addressee: Addressee, prepared: RenderedEmail, sessions: SmtpSessions
) -> SendOutcome | NoAccount:
    """Sends one email exactly once: the outcome, or NoAccount when the account cannot send now (nothing was
    written)."""
    now = clock.now()
    reserved = account_reserve_for_mailing(account_id=work_order.account_id, count=1, now=now)
    if isinstance(reserved, NoAccount):
        return reserved
    reservation = reserved[0]
    account = reservation.account
    name = addressee.name if work_order.salutation_by_name and addressee.name else ""
    rendered = _personalised(prepared, name=name or addressee.email.partition("@")[0])
    is_test, language = addressee.test_run is not None, addressee.language
    headers = {"Reply-To": work_order.reply_to} if work_order.reply_to else {}
    if is_test:  # marked as the campaigns' operator test sends are; its link unsubscribes no one
        rendered = RenderedEmail(subject=f"[TEST] {rendered.subject}", text=rendered.text, html=rendered.html)
        headers["X-Emailsys-Test"] = f"work order {work_order.id} test run {addressee.test_run}"
    message_id = message_id_new(account=account)
    headers[SEND_REFERENCE_HEADER] = send_reference(kind="m", message_id=message_id)
    try:
        message = message_build(
            rendered=rendered,
            account=_sender(work_order, account),
            to_email=addressee.email,
            to_name=addressee.name,
            message_id=message_id,
            date=now,
            unsubscribe_url=unsubscribe_url(contact=None if is_test else addressee.contact, language=language),
            unsubscribe_label=unsubscribe_link_text(language=language),
            extra_headers=headers,
        ).as_string()
    except (ValueError, TypeError) as error:  # e.g. an address no message can carry: this contact only fails
        reservation_release_unclaimed(reservation=reservation)
        mailing_send_settle(
            work_order=work_order, addressee=addressee, state=State.FAILED, reason=f"cannot build the message: {error}"
        )
        return SendOutcome.FAILED
    token = uuid.uuid4()
    claim = {
        "state": State.CLAIMED,
        "claim_token": token,
        "claimed_until": now + send_lease(),
        "account": account,
        "message_id": message_id,
        "subject": rendered.subject,
        "message": message,
        "next_attempt_at": None,
        "attempts": (addressee.record.attempts if addressee.record else 0) + 1,
        "work_order": work_order,
    }
    record = _record_write(work_order, addressee, claim, reservation=reservation, now=now)
    if record is None:
        reservation_release_unclaimed(reservation=reservation)
        return SendOutcome.CLAIMED_ELSEWHERE
    if record is LAPSED:
        return SendOutcome.LAPSED

    def hand_over() -> bool:
        return bool(
            MailingSend.objects.filter(id=record.id, claim_token=token, state=State.CLAIMED).update(
                state=State.HANDED_OVER, handed_over_at=clock.now()
            )
        )

    result = deliver(
        account=account,
        sessions=sessions,
        recipient=addressee.email,
        message_bytes=message.encode(),
        on_handover=hand_over,
    )
    return _record_result(record, token, reservation, result, addressee)


LAPSED = object()  # `_record_write`: the reservation's hold was given back after its lease; nothing written


def _record_write(
    work_order: WorkOrder,
    addressee: Addressee,
    values: dict,
    *,
    reservation: Reservation | None = None,
    now: datetime | None = None,
) -> MailingSend | None | object:
    """Writes `values` to the addressee's record for this mailing: an earlier DEFERRED one, taken back with a
    conditional update, or a new one (the unique constraints decide between concurrent writers). None: someone
    else has it. A claim takes its `reservation` off its hold in the same transaction (a crash leaves the record
    or the held count, never a count nothing gives back); LAPSED: the hold was given back, nothing written."""
    try:
        with transaction.atomic():
            if addressee.record is not None:
                if not MailingSend.objects.filter(id=addressee.record.id, state=State.DEFERRED).update(**values):
                    return None
                record = MailingSend.objects.defer("message").get(id=addressee.record.id)
            else:
                identity = {
                    "work_order": work_order,
                    "contact": addressee.contact,
                    "email": addressee.email,
                    "event_code": work_order.event.code,
                    "sub_event": work_order.sub_event,
                    "stage": work_order.stage,
                    "language": addressee.language,
                    "is_test": addressee.test_run is not None,
                    "test_run": addressee.test_run,
                }
                record = MailingSend.objects.create(**{**identity, **values})
            if reservation is not None and not reservation_holds_take(
                reservations=[reservation], now=now or clock.now()
            ):
                raise _HoldLapsed
            return record
    except IntegrityError:
        return None
    except _HoldLapsed:
        return LAPSED


class _HoldLapsed(Exception):
    pass


def _record_result(
    record: MailingSend, token: uuid.UUID, reservation: Reservation, result: DeliveryResult, addressee: Addressee
) -> SendOutcome:
    """The verdict on the record; the account's slot committed (it may have been delivered) or given back. Every
    outcome but SENT is settled as for a campaign's send record (`send_failure_settle`)."""
    finished = clock.now()
    mine = MailingSend.objects.filter(id=record.id, claim_token=token)
    if result.outcome is Outcome.SENT:
        with transaction.atomic():
            mine.update(
                state=State.SENT, sent_at=finished, provider_message_id=result.provider_message_id,
                claim_token=None, claimed_until=None, last_error="",
            )  # fmt: skip
            reservation_commit(reservation=reservation, finished_at=finished, delivered=True)
        return SendOutcome.SENT
    send_failure_settle(
        mine=mine, reservation=reservation, result=result, email=addressee.email, attempts=record.attempts,
        finished=finished,
    )  # fmt: skip
    return SendOutcome.of(result.outcome)


def mailing_send_settle(*, work_order: WorkOrder, addressee: Addressee, state: str, reason: str) -> None:
    """A contact settled without SMTP (suppressed, gave up): one record, so the mailing never tries again (a
    concurrent writer that got there first settled it)."""
    _record_write(work_order, addressee, {"state": state, "last_error": reason})


HANDED_OVER_BY_A_DEAD_RUN = "the worker stopped after handing the message to SMTP"


def mailing_sends_settle_stale(*, work_order: WorkOrder) -> tuple[int, int]:
    """Settles what a previous holder of this work order's lease left in flight: (recovered, unknown).

    Only the lease holder calls this, and no other worker sends for this work order, so every CLAIMED or
    HANDED_OVER record of it is a dead run's, whatever its claim lease says: CLAIMED never reached the server
    (back to DEFERRED, due now, its reservation given back); HANDED_OVER may have been delivered (UNKNOWN)."""
    now = clock.now()
    recovered = unknown = 0
    for record in MailingSend.objects.filter(work_order=work_order, state__in=[State.CLAIMED, State.HANDED_OVER]):
        if record.state == State.HANDED_OVER:
            unknown += stale_hand_over_settle(record=record, reason=HANDED_OVER_BY_A_DEAD_RUN)
        else:
            recovered += stale_claim_give_back(record=record, campaign_id=None, now=now)
    return recovered, unknown


def mailing_retry_due(*, now: datetime):
    """Deferred records of a key that may be retried now (the Q is applied by callers)."""
    from django.db.models import Q

    return Q(state=State.DEFERRED, attempts__lt=MAX_DEFERRALS) & (
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )


def mailing_send_resolve(*, record_id: int, action: str, actor: str) -> MailingSend:
    """An operator's verdict on an UNKNOWN mailing send, as for a campaign's: mark sent, mark failed, or resend —
    DEFERRED and due now, so the work order's next Send round sends it again."""
    with transaction.atomic():
        return unknown_send_resolve(records=MailingSend.objects, record_id=record_id, action=action, actor=actor)
