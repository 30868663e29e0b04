"""Operator actions on sender accounts: pause, resume or disable; reset today's limits. Held under the
account's row lock, like the arbiter's decisions, and logged as activities."""

import logging

from django.db import transaction
from django.dispatch import Signal

from audit.actions import AuditAction
from audit.services import audit_record
from campaigns.models import AccountDailyUsage, Activity, CampaignAccount, Lead, ReservationHold, SenderAccount
from campaigns.services.activities import activity_record
from campaigns.services.live import account_live_changed
from campaigns.services.throttling import account_local_day
from emailsys import clock
from emailsys.fields import choice_validate

# Sent inside the reset's transaction with `account_id`; a receiver wakes what slept on the account (the work
# orders app connects one) and returns the ids it woke. Campaigns do not import the apps that send through them.
account_limits_reset = Signal()
logger = logging.getLogger(__name__)
_STATUS_ACTIONS = {
    SenderAccount.Status.ACTIVE: AuditAction.ACCOUNT_RESUME,
    SenderAccount.Status.PAUSED: AuditAction.ACCOUNT_PAUSE,
    SenderAccount.Status.DISABLED: AuditAction.ACCOUNT_DISABLE,
}


def account_set_status(*, account: SenderAccount, status: str, reason: str = "") -> SenderAccount:
    """Pauses, resumes or disables an account; the reason is stored on the account for the operator.

    Resuming also clears the consecutive-failure count, so the next failure does not pause it again at once.
    A change is logged as ACCOUNT_PAUSED when paused, STATUS_CHANGED otherwise; the same status only updates
    the reason.
    """
    choice_validate(value=status, choices=SenderAccount.Status, what="sender account status")
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
            logger.info(
                "account %s: %s → %s%s",
                locked.email,
                previous,
                status,
                f" ({reason})" if reason else "",
                extra={"event": "account_status", "account": locked.email, "status": status},
            )
            activity_record(
                kind=Activity.Kind.ACCOUNT_PAUSED if paused else Activity.Kind.STATUS_CHANGED,
                account=locked,
                message=reason or f"Account {previous} → {status}",
                detail={"from": previous, "to": status},
            )
            audit_record(
                action=_STATUS_ACTIONS[status],
                target=locked,
                changes={"status": [previous, status]},
                detail={"reason": reason} if reason else None,
            )
        account_live_changed(locked.pk)
    for field in ("status", "status_reason", "consecutive_failures"):
        setattr(account, field, getattr(locked, field))
    return account


def account_reset_limits(*, account: SenderAccount) -> list[int]:
    """Makes the account available now: today's usage (in the account's time zone) and each campaign's
    usage back to 0, waits and failure count cleared. Held under the account's row lock, like the arbiter.
    Campaign leads whose step is due but that wait (for this account's room) are due again now; work orders
    sleeping because the account could not send are resumed (`account_limits_reset`), in the same transaction;
    their ids are returned.

    Clearing busy_until releases an account a crashed send left held; do it while the account is really
    idle, or a second send may start while the first is still talking to the server.
    """
    with transaction.atomic():
        locked = SenderAccount.objects.select_for_update().get(pk=account.pk)
        day = account_local_day(locked, clock.now())
        usage = AccountDailyUsage.objects.filter(account=locked, day=day).values_list("reserved", flat=True).first()
        AccountDailyUsage.objects.filter(account=locked, day=day).update(reserved=0)
        ReservationHold.objects.filter(account=locked).delete()  # part of the count just reset: never given back
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
        now = clock.now()
        Lead.objects.filter(
            state=Lead.State.IN_PROGRESS, campaign__account_settings__account=locked, claim_token__isnull=True,
            step_due_at__lte=now, next_due_at__gt=now,
        ).update(next_due_at=now)  # fmt: skip
        answers = account_limits_reset.send(sender=SenderAccount, account_id=locked.pk)
        woken = sorted(work_order_id for _, ids in answers for work_order_id in ids)
        audit_record(
            action=AuditAction.ACCOUNT_RESET_LIMITS,
            target=locked,
            detail={"day": day.isoformat(), "reserved_before": usage or 0, "work_orders_woken": woken},
        )
        account_live_changed(locked.pk)
    for field in ("next_available_at", "busy_until", "consecutive_failures"):
        setattr(account, field, getattr(locked, field))
    return woken
