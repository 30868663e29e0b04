"""Operator actions: campaign and account status, progress resets, recipient status rebuilds, suppression,
limit resets and key rotation. Management commands, admin actions and the API call these.

Every status change is logged through `activity_record`. Rows that the dispatcher also moves (campaigns,
accounts) are changed under their row lock, so an operator action never interleaves with an arbiter step.
"""

from cryptography.fernet import InvalidToken
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import DomainNameValidator, validate_email
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, Subquery, TextField, Value
from django.db.models.functions import Cast

from campaigns.models import (
    AccountDailyUsage,
    Activity,
    Campaign,
    CampaignAccount,
    DryRunRecord,
    Lead,
    Recipient,
    SenderAccount,
    SendRecord,
    Suppression,
)
from campaigns.services.activities import activity_record
from emailsys import clock
from emailsys.crypto import secret_rotate

# Recipient statuses an operator action or a rebuild never overwrites: mailing them again would be wrong.
PROTECTED_RECIPIENT_STATUSES = (Recipient.Status.BOUNCED, Recipient.Status.UNSUBSCRIBED)
# Send records a reset may delete: each is known not to have delivered anything.
RESETTABLE_SEND_STATES = (SendRecord.State.FAILED, SendRecord.State.SKIPPED, SendRecord.State.DEFERRED)


def _choice_or_error(*, value: str, choices: type, what: str) -> str:
    if value not in choices.values:
        raise ValidationError(f"{value!r} is not a {what}; use one of: {', '.join(choices.values)}.")
    return value


def campaign_set_status(*, campaign: Campaign, status: str, reason: str = "") -> Campaign:
    """Moves a campaign between draft, active, paused and completed.

    Rules: nothing goes back to draft; a completed campaign is resumed only after `campaign_reset_progress`
    (which leaves it paused); going active needs at least one step and one sender account. Setting the
    current status again changes nothing and logs nothing. Activating makes in-progress leads without a due
    time due now, so leads imported into a draft start with the first dispatcher run.
    """
    _choice_or_error(value=status, choices=Campaign.Status, what="campaign status")
    with transaction.atomic():
        locked = Campaign.objects.select_for_update().get(pk=campaign.pk)
        previous = locked.status
        if status == previous:
            campaign.status = previous
            return campaign
        if status == Campaign.Status.DRAFT:
            raise ValidationError(f"Campaign {locked.pk} has left draft and cannot go back to it.")
        if previous == Campaign.Status.COMPLETED:
            raise ValidationError(
                f"Campaign {locked.pk} is completed; reset its progress first (reset_campaign_progress), "
                "then activate it."
            )
        if status == Campaign.Status.ACTIVE:
            missing = []
            if not locked.steps.exists():
                missing.append("at least one sequence step")
            if not locked.account_settings.exists():
                missing.append("at least one sender account")
            if missing:
                raise ValidationError(f"Campaign {locked.pk} cannot be activated: it needs {' and '.join(missing)}.")
            Lead.objects.filter(campaign=locked, state=Lead.State.IN_PROGRESS, next_due_at__isnull=True).update(
                next_due_at=clock.now()
            )
        locked.status = status
        locked.save(update_fields=["status", "updated_at"])
        activity_record(
            kind=Activity.Kind.STATUS_CHANGED,
            campaign=locked,
            message=reason or f"Campaign {previous} → {status}",
            detail={"from": previous, "to": status, **({"reason": reason} if reason else {})},
        )
    campaign.status = locked.status
    campaign.updated_at = locked.updated_at
    return campaign


def _recipients_reset(*, recipients) -> int:
    return recipients.exclude(status__in=PROTECTED_RECIPIENT_STATUSES).update(
        status=Recipient.Status.NOT_CONTACTED, last_contacted_at=None, last_step=None
    )


def _leads_reset(*, leads) -> int:
    return leads.update(
        state=Lead.State.IN_PROGRESS, stop_reason="", current_step=1, next_due_at=clock.now(), last_sent_at=None
    )


def campaign_reset_progress(*, campaign: Campaign) -> int:
    """Starts every lead of the campaign over at step 1, due now. Returns the number of leads reset.

    Recipients go back to not contacted, except bounced and unsubscribed ones. Dry runs are deleted, and so
    are send records known not to have delivered (failed, skipped, deferred). Sent, handed-over, unknown and
    claimed records stay: they are the proof of what went out (or may have), and because a send record is
    unique per (recipient, step), a reset never makes an already-sent email go out twice — the dispatcher
    finds the record and moves on. A completed campaign becomes paused, ready to be activated again.
    """
    with transaction.atomic():
        locked = Campaign.objects.select_for_update().get(pk=campaign.pk)
        count = _leads_reset(leads=Lead.objects.filter(campaign=locked))
        recipients = _recipients_reset(recipients=Recipient.objects.filter(lead__campaign=locked))
        records, _ = SendRecord.objects.filter(campaign=locked, state__in=RESETTABLE_SEND_STATES).delete()
        dry_runs, _ = DryRunRecord.objects.filter(campaign=locked).delete()
        detail = {
            "reset": True,
            "leads": count,
            "recipients": recipients,
            "send_records_deleted": records,
            "dry_runs_deleted": dry_runs,
        }
        if locked.status == Campaign.Status.COMPLETED:
            detail.update({"from": locked.status, "to": Campaign.Status.PAUSED})
            locked.status = Campaign.Status.PAUSED
            locked.save(update_fields=["status", "updated_at"])
        activity_record(
            kind=Activity.Kind.STATUS_CHANGED, campaign=locked, message=f"Progress reset: {count} leads", detail=detail
        )
    campaign.status = locked.status
    return count


def lead_reset_progress(*, lead: Lead) -> Lead:
    """`campaign_reset_progress` for one lead: same rules, same guarantee that nothing sent goes out again."""
    with transaction.atomic():
        Lead.objects.select_for_update().filter(pk=lead.pk).get()
        _leads_reset(leads=Lead.objects.filter(pk=lead.pk))
        recipients = _recipients_reset(recipients=Recipient.objects.filter(lead_id=lead.pk))
        records, _ = SendRecord.objects.filter(lead_id=lead.pk, state__in=RESETTABLE_SEND_STATES).delete()
        dry_runs, _ = DryRunRecord.objects.filter(recipient__lead_id=lead.pk).delete()
        activity_record(
            kind=Activity.Kind.STATUS_CHANGED,
            campaign=lead.campaign_id,
            lead=lead,
            message="Lead progress reset",
            detail={
                "reset": True,
                "recipients": recipients,
                "send_records_deleted": records,
                "dry_runs_deleted": dry_runs,
            },
        )
    lead.refresh_from_db()
    return lead


def leads_bulk_update_status(*, campaign: Campaign, status: str) -> int:
    """Sets the status of every recipient of the campaign; returns how many changed.

    Bounced and unsubscribed recipients keep their status: a bulk action must never make someone who
    unsubscribed, or whose address bounces, look mailable again (change those one by one in the admin if you
    really mean it). One activity row for the whole change.
    """
    _choice_or_error(value=status, choices=Recipient.Status, what="recipient status")
    with transaction.atomic():
        recipients = Recipient.objects.filter(lead__campaign=campaign).exclude(status=status)
        count = recipients.exclude(status__in=PROTECTED_RECIPIENT_STATUSES).update(status=status)
        activity_record(
            kind=Activity.Kind.STATUS_CHANGED,
            campaign=campaign,
            message=f"{count} recipients set to {status}",
            detail={"recipients_to": status, "count": count},
        )
    return count


def recipients_update_statuses(*, campaign: Campaign | None = None) -> int:
    """Rebuilds each recipient's status, last_contacted_at and last_step from its send records (the truth).

    A sent record makes a recipient contacted (last_contacted_at and last_step from the latest one); a
    bounced record makes it bounced; with neither it is not contacted. Replied, unsubscribed and bounced
    recipients keep their status (only their contact dates are rebuilt). Each change is a compare-and-set on
    the status read, so a reply or unsubscribe recorded meanwhile is never overwritten. Returns the number of
    recipients changed.
    """
    latest_sent = SendRecord.objects.filter(recipient=OuterRef("pk"), state=SendRecord.State.SENT).order_by(
        "-sent_at", "-id"
    )
    recipients = Recipient.objects.annotate(
        sent_at=Subquery(latest_sent.values("sent_at")[:1]),
        sent_step=Subquery(latest_sent.values("step__order")[:1]),
        bounced=Exists(SendRecord.objects.filter(recipient=OuterRef("pk"), state=SendRecord.State.BOUNCED)),
    )
    if campaign is not None:
        recipients = recipients.filter(lead__campaign=campaign)
    kept = (Recipient.Status.REPLIED, *PROTECTED_RECIPIENT_STATUSES)
    changed = 0
    rows = recipients.values_list("id", "status", "last_contacted_at", "last_step", "sent_at", "sent_step", "bounced")
    for pk, status, last_contacted_at, last_step, sent_at, sent_step, bounced in rows.iterator(chunk_size=2000):
        if status in kept:
            new_status = status
        elif bounced:
            new_status = Recipient.Status.BOUNCED
        elif sent_at is not None:
            new_status = Recipient.Status.CONTACTED
        else:
            new_status = Recipient.Status.NOT_CONTACTED
        if (new_status, sent_at, sent_step) == (status, last_contacted_at, last_step):
            continue
        changed += Recipient.objects.filter(pk=pk, status=status).update(
            status=new_status, last_contacted_at=sent_at, last_step=sent_step
        )
    return changed


def suppression_parse(value: str) -> tuple[str, str]:
    value = value.strip().lower()
    if value.startswith("@"):  # "@example.com" means the domain
        value = value[1:]
    if "@" in value:
        try:
            validate_email(value)
        except ValidationError:
            raise ValidationError(f"{value!r} is not a valid email address.") from None
        return Suppression.Kind.ADDRESS, value
    try:
        DomainNameValidator()(value)
    except ValidationError:
        raise ValidationError(f"{value!r} is neither an email address nor a domain name.") from None
    return Suppression.Kind.DOMAIN, value


def suppression_add(*, value: str, reason: str = "") -> Suppression:
    """Suppresses an address (contains "@") or a whole domain ("example.com" or "@example.com").

    Idempotent: adding the same value again returns the existing row and keeps its first reason.
    """
    kind, value = suppression_parse(value)
    suppression, _ = Suppression.objects.get_or_create(kind=kind, value=value, defaults={"reason": reason[:200]})
    return suppression


def suppression_matches(*, email: str) -> bool:
    """True if this exact address (case-insensitive) or its domain is suppressed. One query."""
    return bool(suppressed_among(emails=[email]))


def suppressed_among(*, emails: list[str]) -> set[str]:
    """The given addresses (lower-cased) that are suppressed, by address or by domain. One query for a batch."""
    lowered = {email.strip().lower() for email in emails}
    domains = {email.rpartition("@")[2] for email in lowered}
    rows = list(
        Suppression.objects.filter(
            Q(kind=Suppression.Kind.ADDRESS, value__in=lowered) | Q(kind=Suppression.Kind.DOMAIN, value__in=domains)
        ).values_list("kind", "value")
    )
    blocked_addresses = {value for kind, value in rows if kind == Suppression.Kind.ADDRESS}
    blocked_domains = {value for kind, value in rows if kind == Suppression.Kind.DOMAIN}
    return {email for email in lowered if email in blocked_addresses or email.rpartition("@")[2] in blocked_domains}


def account_reset_limits(*, account: SenderAccount) -> None:
    """Makes the account available now: today's usage (in the account's time zone) and each campaign's
    usage back to 0, waits and failure count cleared. Held under the account's row lock, like the arbiter.

    Clearing busy_until releases an account a crashed send left held; do it while the account is really
    idle, or a second send may start while the first is still talking to the server.
    """
    with transaction.atomic():
        locked = SenderAccount.objects.select_for_update().get(pk=account.pk)
        day = clock.local_day(time_zone=locked.time_zone, at=clock.now())
        usage = AccountDailyUsage.objects.filter(account=locked, day=day).values_list("reserved", flat=True).first()
        AccountDailyUsage.objects.filter(account=locked, day=day).update(reserved=0)
        CampaignAccount.objects.filter(account=locked).update(usage_reserved=0)
        locked.next_available_at = None
        locked.busy_until = None
        locked.consecutive_failures = 0
        locked.save(update_fields=["next_available_at", "busy_until", "consecutive_failures"])
        activity_record(
            kind=Activity.Kind.STATUS_CHANGED,
            account=locked,
            message="Sending limits reset",
            detail={"limits_reset": True, "day": day.isoformat(), "reserved_before": usage or 0},
        )
    for field in ("next_available_at", "busy_until", "consecutive_failures"):
        setattr(account, field, getattr(locked, field))


def account_set_status(*, account: SenderAccount, status: str, reason: str = "") -> SenderAccount:
    """Pauses, resumes or disables an account; the reason is stored on the account for the operator.

    Resuming also clears the consecutive-failure count, so the next failure does not pause it again at once.
    A change is logged as ACCOUNT_PAUSED when paused, STATUS_CHANGED otherwise; the same status only updates
    the reason.
    """
    _choice_or_error(value=status, choices=SenderAccount.Status, what="sender account status")
    with transaction.atomic():
        locked = SenderAccount.objects.select_for_update().get(pk=account.pk)
        previous = locked.status
        locked.status = status
        locked.status_reason = reason
        if status == SenderAccount.Status.ACTIVE:
            locked.consecutive_failures = 0
        locked.save(update_fields=["status", "status_reason", "consecutive_failures"])
        if previous != status:
            paused = status == SenderAccount.Status.PAUSED
            activity_record(
                kind=Activity.Kind.ACCOUNT_PAUSED if paused else Activity.Kind.STATUS_CHANGED,
                account=locked,
                message=reason or f"Account {previous} → {status}",
                detail={"from": previous, "to": status},
            )
    for field in ("status", "status_reason", "consecutive_failures"):
        setattr(account, field, getattr(locked, field))
    return account


def account_passwords_rotate() -> int:
    """Re-encrypts every stored SMTP password with the newest key in FIELD_ENCRYPTION_KEYS.

    Works on the ciphertext (never loads a plaintext into a model) and writes each row with a compare-and-set
    on the old ciphertext, so a password changed meanwhile is not overwritten. Returns how many were
    re-encrypted. Run it after putting a new key first; drop the old key only afterwards. Each row commits on
    its own, so an interrupted run is simply run again.
    """
    raw = Cast("smtp_password", output_field=TextField())
    rows = SenderAccount.objects.annotate(ciphertext=raw).exclude(ciphertext="").values_list("id", "ciphertext")
    rotated = 0
    for pk, ciphertext in rows.iterator():
        try:
            new_ciphertext = secret_rotate(ciphertext)
        except InvalidToken:
            raise ImproperlyConfigured(
                f"The SMTP password of sender account {pk} cannot be decrypted with any key in "
                "FIELD_ENCRYPTION_KEYS; keep the old key in the list until rotation is done."
            ) from None
        rotated += (
            SenderAccount.objects.annotate(ciphertext=raw)
            .filter(pk=pk, ciphertext=ciphertext)
            .update(smtp_password=Value(new_ciphertext, output_field=TextField()))
        )
    return rotated
