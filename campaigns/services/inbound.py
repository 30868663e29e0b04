"""What inbound mail does to campaigns: a reply stops its lead, a bounce suppresses (hard) or counts (soft), an
automatic answer is only recorded (and may postpone), an unsubscribe request suppresses and stops.

Entry point: `inbound_email_handle`, an INBOUND_RESULT_HANDLERS handler. processing/ calls it inside the
transaction that inserts the message's classification, so it runs exactly once per message, atomically with
it; it runs in a savepoint there, and an error fails this message's reaction alone. Mail that concerns no
sender account of ours costs one indexed query, mail to one of them three or four.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef, Q

from campaigns.models import Activity, BounceRecord, Lead, Recipient, SenderAccount, SendRecord
from campaigns.services.accounts import account_set_status
from campaigns.services.activities import activity_record
from campaigns.services.inbound_detect import (
    BouncedAddress,
    BounceReport,
    auto_reply_detect,
    away_until_parse,
    bounce_parse,
    reply_own_text,
    send_reference_parse,
    unsubscribe_requested,
)
from campaigns.services.leads import leads_stop
from campaigns.services.live import campaign_live_changed
from campaigns.services.recipients import recipient_mark_replied
from campaigns.services.suppressions import suppression_ensure
from campaigns.services.unsubscribes import recipient_unsubscribe
from emailsys import clock
from emailsys.db import fetch_prepared
from processing.models import EmailResult, InboundEmail
from processing.parsing import ParsedEmail

logger = logging.getLogger(__name__)

# Sends an account's bounce rate is measured over (ACCOUNT_BOUNCE_PAUSE_MIN_SENDS: the fewest before it may
# pause the account; 1 bounce in the first 3 sends is no evidence of a bad list).
BOUNCE_RATE_WINDOW = 100
# Domains shared by unrelated people: a reply from one of them never stops another lead at the same domain.
FREE_MAIL_DOMAINS = frozenset(
    "gmail.com googlemail.com outlook.com hotmail.com live.com msn.com yahoo.com yahoo.de yahoo.fr icloud.com "
    "me.com aol.com gmx.de gmx.net gmx.com web.de t-online.de mail.com proton.me protonmail.com orange.fr free.fr "
    "laposte.net libero.it virgilio.it terra.com.br uol.com.br bol.com.br ziggo.nl kpnmail.nl".split()
)


@dataclass(frozen=True)
class InboundOutcome:
    """What one message did (for tests and logs)."""

    kind: str  # "none", "bounce", "auto_reply", "unsubscribe", "reply", "domain_reply"
    recipients: tuple[int, ...] = ()


def inbound_email_handle(*, email: InboundEmail, result: EmailResult, parsed: ParsedEmail) -> InboundOutcome:
    """The INBOUND_RESULT_HANDLERS entry point (signature fixed by processing/services/classify.py)."""
    account = _account_of_mailbox(email.mailbox.address)
    if account is None:
        return InboundOutcome("none")
    bounce = bounce_parse(parsed)
    if bounce is not None:
        return _bounce_handle(email, account, bounce)
    recipient = _recipient_of_reply(parsed, account)
    automatic = auto_reply_detect(parsed)
    if automatic:
        return _auto_reply_handle(email, parsed, recipient, reason=automatic)
    if recipient is None:
        if unsubscribe_requested(parsed) and _mailing_unsubscribe(parsed):
            return InboundOutcome("unsubscribe")
        return _domain_reply_handle(email, parsed, account)
    if unsubscribe_requested(parsed):
        recipient_unsubscribe(recipient=recipient, source=f"reply {_reference(email)}")
        leads_stop(leads=Lead.objects.filter(id=recipient.lead_id), reason=f"{recipient.email} asked to unsubscribe")
        return InboundOutcome("unsubscribe", (recipient.id,))
    if recipient.status in (Recipient.Status.BOUNCED, Recipient.Status.UNSUBSCRIBED):
        return InboundOutcome("none", (recipient.id,))
    recipient_mark_replied(
        recipient=recipient, at=email.sent_at or email.received_at, source=f"reply {_reference(email)}"
    )
    _reply_link(email, recipient)
    return InboundOutcome("reply", (recipient.id,))


def _account_of_mailbox(address: str) -> SenderAccount | None:
    """The sender account whose mailbox this is (addresses compared lower-case), without its secrets: nothing here
    decrypts them. Most inbound mail is for mailboxes that are no account's: for those one prepared query, not an
    ORM one (its compilation cost more than the rest of this handler)."""
    table, quote = SenderAccount._meta.db_table, connection.ops.quote_name
    sql = f"SELECT id FROM {quote(table)} WHERE lower(email) = lower(%s) ORDER BY id LIMIT 1"  # noqa: S608 - names from the model
    found = fetch_prepared(sql, [address])
    return SenderAccount.objects.only("id", "email", "status").get(pk=found[0][0]) if found else None


def _reference(email: InboundEmail) -> str:
    return f"inbound #{email.pk}" + (f" <{email.message_id}>" if email.message_id else "")


# --- replies ---------------------------------------------------------------------------------------------------


def _recipient_of_reply(parsed: ParsedEmail, account: SenderAccount) -> Recipient | None:
    """The recipient this message answers: the send whose Message-ID its In-Reply-To / References name (newest
    first), else a recipient with the sender's address in an in-progress lead this account wrote to."""
    ids = [f"<{value}>" for value in [parsed.in_reply_to, *reversed(parsed.references)] if value]
    if ids:
        sends = {
            message_id: recipient_id
            for message_id, recipient_id in SendRecord.objects.filter(message_id__in=ids).values_list(
                "message_id", "recipient_id"
            )
        }
        for message_id in ids:
            if message_id in sends:
                return Recipient.objects.select_related("lead__campaign").get(id=sends[message_id])
    if not parsed.sender:
        return None
    wrote = SendRecord.objects.filter(recipient=OuterRef("pk"), account=account, state=SendRecord.State.SENT)
    return (
        Recipient.objects.select_related("lead__campaign")
        .filter(email=parsed.sender.lower(), lead__state=Lead.State.IN_PROGRESS)
        .filter(Exists(wrote))
        .order_by("-last_contacted_at", "-id")
        .first()
    )


def _reply_link(email: InboundEmail, recipient: Recipient) -> None:
    """The REPLIED activity that recipient_mark_replied wrote names the reply (its inbound pk and Message-ID)."""
    replied = Activity.objects.filter(lead_id=recipient.lead_id, recipient=recipient, kind=Activity.Kind.REPLIED)
    activity = replied.order_by("-created_at", "-id").first()  # the lead's index: a lead has few activities
    if activity is not None:
        activity.detail = {**activity.detail, "inbound_email": email.pk, "inbound_message_id": email.message_id}
        activity.save(update_fields=["detail"])


def _mailing_unsubscribe(parsed: ParsedEmail) -> bool:
    """An unsubscribe request answering an event mailing's send: its contact unsubscribes (every segment, the
    address suppressed), as with the link in the email."""
    from workorders.models import MailingSend
    from workorders.services.unsubscribes import contact_unsubscribe

    ids = [f"<{value}>" for value in [parsed.in_reply_to, *parsed.references] if value]
    send = MailingSend.objects.select_related("contact").filter(message_id__in=ids, is_test=False).first()
    if send is None or send.contact is None:
        return False
    contact_unsubscribe(contact=send.contact)
    return True


def _domain_reply_handle(email: InboundEmail, parsed: ParsedEmail, account: SenderAccount) -> InboundOutcome:
    """Campaigns with stop_on_domain_reply: a reply from someone else at a lead's domain stops that lead."""
    domain = (parsed.sender or "").rpartition("@")[2].lower()
    if not domain or domain in FREE_MAIL_DOMAINS:
        return InboundOutcome("none")
    wrote = SendRecord.objects.filter(lead=OuterRef("pk"), account=account, state=SendRecord.State.SENT)
    leads = Lead.objects.filter(
        campaign__stop_on_domain_reply=True,
        state=Lead.State.IN_PROGRESS,
        recipients__email__endswith=f"@{domain}",
    ).filter(Exists(wrote))
    lead_ids = list(leads.values_list("id", flat=True).distinct()[:50])
    if not lead_ids:
        return InboundOutcome("none")
    for lead in Lead.objects.filter(id__in=lead_ids):
        activity_record(
            kind=Activity.Kind.REPLIED,
            campaign=lead.campaign_id,
            lead=lead,
            account=account,
            message=f"{parsed.sender} replied for the domain {domain}",
            detail={"inbound_email": email.pk, "inbound_message_id": email.message_id, "domain": domain},
        )
    leads_stop(leads=Lead.objects.filter(id__in=lead_ids), reason=f"{parsed.sender} at {domain} replied")
    return InboundOutcome("domain_reply")


# --- automatic answers -----------------------------------------------------------------------------------------


def _auto_reply_handle(
    email: InboundEmail, parsed: ParsedEmail, recipient: Recipient | None, *, reason: str
) -> InboundOutcome:
    """Recorded, never a reply; with AUTO_REPLY_POSTPONE an "away until <date>" moves the lead's next step to
    the day after (never earlier than it was)."""
    if recipient is None:
        return InboundOutcome("none")
    lead = recipient.lead
    detail = {"inbound_email": email.pk, "inbound_message_id": email.message_id, "reason": reason}
    message = f"automatic answer from {recipient.email} ({reason})"
    if settings.AUTO_REPLY_POSTPONE:
        today = clock.now().date()
        until = away_until_parse(f"{parsed.subject}\n{reply_own_text(parsed.text or '')}", today=today)
        if until is not None:
            resume = datetime.combine(until + timedelta(days=1), time(0), tzinfo=clock.now().tzinfo)
            postponed = (
                Lead.objects.filter(id=lead.id, state=Lead.State.IN_PROGRESS)
                .filter(Q(next_due_at__lt=resume) | Q(next_due_at__isnull=True))
                .update(next_due_at=resume, step_due_at=resume)
            )
            if postponed:
                detail["postponed_until"] = resume.isoformat()
                message += f"; next step postponed to {resume:%Y-%m-%d}"
    activity_record(
        kind=Activity.Kind.AUTO_REPLIED,
        campaign=lead.campaign_id,
        lead=lead,
        recipient=recipient,
        message=message,
        detail=detail,
    )
    campaign_live_changed(lead.campaign_id)
    return InboundOutcome("auto_reply", (recipient.id,))


# --- bounces ---------------------------------------------------------------------------------------------------


def _bounce_handle(email: InboundEmail, account: SenderAccount, bounce: BounceReport) -> InboundOutcome:
    """Each reported address: a BounceRecord (once per message and address); hard → the recipient bounced, the
    address suppressed for every campaign and mailing, the lead stopped when no recipient of it is left to
    mail (as a send-time bounce does); soft → counted. Then the account's bounce rate is checked. An address
    that cannot be recorded (an MTA's garbage) fails alone, logged."""
    send = _original_send(bounce)
    mailing = _original_mailing_send(bounce) if send is None else None
    touched: list[int] = []
    for address in bounce.addresses:
        original = send if send is not None and send.recipient.email == address.email else None
        if send is not None and original is None and len(bounce.addresses) == 1:
            original = send  # the send the report returns, bounced under another name (an alias, a forward)
        if original is None and send is None and mailing is None:
            original = _last_send_to(account, address.email)
        try:
            with transaction.atomic():
                touched += _bounced_address_record(email, account, bounce, address, original, mailing)
        except Exception:  # noqa: BLE001 - one reported address fails alone
            logger.exception("bounce of %r in inbound message %s not recorded", address.email, email.pk)
    accounts = {account.id} | ({send.account_id} if send is not None and send.account_id else set())
    for account_id in sorted(accounts):
        account_bounce_check(account=SenderAccount.objects.get(id=account_id))
    return InboundOutcome("bounce", tuple(touched))


def _bounced_address_record(
    email: InboundEmail,
    account: SenderAccount,
    bounce: BounceReport,
    address: BouncedAddress,
    original: SendRecord | None,
    mailing,
) -> list[int]:
    """The recipients it touched; [] when this message already reported this address."""
    bounced_email = original.recipient.email if original is not None else address.email  # the one we wrote to
    mailed_by = (mailing.account_id or account.id) if mailing is not None else None
    try:
        with transaction.atomic():
            BounceRecord.objects.create(
                inbound_email=email,
                email=bounced_email,
                kind=BounceRecord.Kind.HARD if address.hard else BounceRecord.Kind.SOFT,
                status=address.status,
                diagnostic=address.diagnostic,
                message_id=_original_message_id(original, mailing, bounce),
                send_record=original,
                account_id=(original.account_id if original and original.account_id else mailed_by or account.id),
                original_sent_at=original.sent_at if original else (mailing.sent_at if mailing else None),
            )
    except IntegrityError:
        return []
    detail = {
        "inbound_email": email.pk,
        "status": address.status,
        "diagnostic": address.diagnostic[:300],
        "message_id": original.message_id if original else "",
        "reported_address": address.email,
    }
    if address.hard:
        suppression_ensure(value=bounced_email, reason=f"hard bounce {address.status}".strip())
    touched = []
    for recipient in _bounced_recipients(bounced_email, original, hard=address.hard):
        if address.hard:
            Recipient.objects.filter(id=recipient.id).exclude(status=Recipient.Status.UNSUBSCRIBED).update(
                status=Recipient.Status.BOUNCED
            )
            _lead_stop_if_nobody_left(recipient.lead)
        activity_record(
            kind=Activity.Kind.BOUNCED if address.hard else Activity.Kind.SOFT_BOUNCED,
            campaign=recipient.lead.campaign_id,
            lead=recipient.lead,
            recipient=recipient,
            account=original.account_id if original else account,
            step_order=original.step.order if original and original.recipient_id == recipient.id else None,
            message=f"{'hard' if address.hard else 'soft'} bounce of {bounced_email} {address.status}".strip(),
            detail=detail,
        )
        campaign_live_changed(recipient.lead.campaign_id)
        touched.append(recipient.id)
    return touched


def _original_send(bounce: BounceReport) -> SendRecord | None:
    """The campaign send this bounce returns, by our X-Emailsys-Send or the original's Message-ID."""
    ids = _original_ids(bounce)
    if not ids:
        return None
    return SendRecord.objects.select_related("recipient__lead", "step").filter(message_id__in=ids).first()


def _original_ids(bounce: BounceReport) -> list[str]:
    """Our Message-IDs the bounce names (with <>): its X-Emailsys-Send's first (it survives a rewritten
    Message-ID), then the returned headers'."""
    ids = list(bounce.message_ids)
    parsed_reference = send_reference_parse(bounce.send_reference) if bounce.send_reference else None
    if parsed_reference is not None:
        ids.insert(0, parsed_reference[1])
    return ids


def _original_mailing_send(bounce: BounceReport):
    """The event mailing's send this bounce returns (its address is suppressed like a campaign's)."""
    from workorders.models import MailingSend  # workorders builds on campaigns: imported where it is needed

    ids = _original_ids(bounce)
    if not ids:
        return None
    return MailingSend.objects.filter(message_id__in=ids).only("id", "message_id", "account_id", "sent_at").first()


def _original_message_id(original: SendRecord | None, mailing, bounce: BounceReport) -> str:
    if original is not None:
        return original.message_id
    if mailing is not None:
        return mailing.message_id
    return (bounce.message_ids or [""])[0]


def _last_send_to(account: SenderAccount, address: str) -> SendRecord | None:
    """A bounce without our headers: the account's latest campaign send to that address."""
    return (
        SendRecord.objects.select_related("recipient__lead", "step")
        .filter(account=account, recipient__email=address, state=SendRecord.State.SENT)
        .order_by("-sent_at")
        .first()
    )


def _bounced_recipients(address: str, original: SendRecord | None, *, hard: bool) -> list[Recipient]:
    """The recipient of the send the bounce returns; for a hard bounce also every recipient with that address
    in an in-progress lead (the address is suppressed: those sequences hear why it gets nothing more)."""
    if not hard:
        return [original.recipient] if original is not None else []
    recipients = Recipient.objects.select_related("lead").filter(
        Q(email=address, lead__state=Lead.State.IN_PROGRESS) | Q(id=original.recipient_id if original else None)
    )
    return list(recipients.order_by("id"))


def _lead_stop_if_nobody_left(lead: Lead) -> None:
    mailable = Recipient.objects.filter(lead_id=lead.id, status__in=Recipient.MAILABLE_STATUSES).exists()
    if not mailable:
        leads_stop(leads=Lead.objects.filter(id=lead.id), reason="every recipient bounced")


def account_bounce_rate(*, account: SenderAccount) -> tuple[int, int]:
    """(bounced sends, sends) over the account's last BOUNCE_RATE_WINDOW campaign sends: a send counts as
    bounced once, hard or soft, however many reports named it, and a send refused at SMTP time counts too."""
    window = list(
        SendRecord.objects.filter(account=account, state__in=[SendRecord.State.SENT, SendRecord.State.BOUNCED])
        .order_by("-created_at")
        .values_list("id", "state")[:BOUNCE_RATE_WINDOW]
    )
    ids = [pk for pk, _ in window]
    reported = set(BounceRecord.objects.filter(send_record_id__in=ids).values_list("send_record_id", flat=True))
    refused = {pk for pk, state in window if state == SendRecord.State.BOUNCED}
    return len(reported | refused), len(window)


def account_bounce_check(*, account: SenderAccount) -> bool:
    """Pauses an active account whose bounce rate over its last sends exceeds ACCOUNT_BOUNCE_PAUSE_RATE (with
    at least ACCOUNT_BOUNCE_PAUSE_MIN_SENDS sends), with the reason. True when it paused it."""
    if account.status != SenderAccount.Status.ACTIVE:
        return False
    bounced, sends = account_bounce_rate(account=account)
    if sends < settings.ACCOUNT_BOUNCE_PAUSE_MIN_SENDS or bounced / sends <= settings.ACCOUNT_BOUNCE_PAUSE_RATE:
        return False
    reason = (
        f"bounce rate {bounced / sends:.0%} over the last {sends} sends ({bounced} bounced) exceeds "
        f"{settings.ACCOUNT_BOUNCE_PAUSE_RATE:.0%}"
    )
    account_set_status(account=account, status=SenderAccount.Status.PAUSED, reason=reason)
    logger.warning("account %s paused: %s", account.email, reason)
    return True
