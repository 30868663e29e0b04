"""The suppression list: addresses and whole domains no campaign or event mailing ever writes to."""

from django.core.exceptions import ValidationError
from django.core.validators import DomainNameValidator, validate_email
from django.db.models import Q

from audit.actions import AuditAction
from audit.services import audit_record
from campaigns.models import Suppression


def suppression_add(*, value: str, reason: str = "") -> Suppression:
    """Suppresses an address (contains "@") or a whole domain ("example.com" or "@example.com").

    Idempotent: adding the same value again returns the existing row and keeps its first reason.
    """
    return suppression_ensure(value=value, reason=reason)[0]


def suppression_ensure(*, value: str, reason: str = "") -> tuple[Suppression, bool]:
    """`suppression_add`, and whether this call created the row (False: it existed, unchanged), for callers
    that tell an operator which it was."""
    kind, value = suppression_parse(value)
    suppression, created = Suppression.objects.get_or_create(kind=kind, value=value, defaults={"reason": reason[:200]})
    if created:
        audit_record(action=AuditAction.SUPPRESSION_ADD, target=suppression, detail={"reason": suppression.reason})
    return suppression, created


def suppression_remove(*, suppression: Suppression) -> None:
    """Deletes a suppression: mail to that address or domain may go again, so the audit trail records it."""
    audit_record(action=AuditAction.SUPPRESSION_DELETE, target=suppression,
                 detail={"kind": suppression.kind, "value": suppression.value})  # fmt: skip
    suppression.delete()


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


def suppression_matches(*, email: str) -> bool:
    """True if this exact address (case-insensitive) or its domain is suppressed. One query."""
    return bool(suppressed_among(emails=[email]))
