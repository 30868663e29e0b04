"""Recording the audit trail: one service, `audit_record`, called where an action happens (the services the
admin, the API and the commands share), so every entry point is covered by one call. Entries are django-auditlog
`LogEntry` rows: who (`actor`, and `additional_data["actor"]` for a command's OS user), when (`timestamp`),
what (`additional_data["action"]`, an `AuditAction`; the object; `changes` as {field: [before, after]};
`additional_data["detail"]`), from where (`additional_data["source"]`, `remote_addr`)."""

from collections.abc import Iterable
from typing import Any

from auditlog.models import LogEntry
from django.db.models import Field, Model
from django.utils.encoding import smart_str

from audit.actions import AuditAction
from audit.context import audit_context_current
from emailsys import clock
from emailsys.crypto import EncryptedTextField

# What a secret's value becomes in `changes`: set or not, never the value, its ciphertext or a hash.
SECRET_SHOWN = "***"  # noqa: S105 - a mask, not a password
_KINDS = {"create": LogEntry.Action.CREATE, "delete": LogEntry.Action.DELETE}


def audit_active() -> bool:
    """True inside an operator's request or command: lets a caller skip work only an entry needs."""
    return audit_context_current() is not None


def audit_record(
    *,
    action: str,
    target: Model | type[Model],
    changes: dict[str, list[str]] | None = None,
    detail: dict[str, Any] | None = None,
) -> LogEntry | None:
    """Records an operator's action on `target` — a row, or a model for an action on no single row (a contacts
    import). Saved in the caller's transaction: an action rolled back leaves no entry. Nothing is recorded
    without an audit context (`audit.context`: a worker acting on its own), and None is returned.

    `changes`: {field: [before, after]} as strings (`audit_changes` masks secrets); `detail`: JSON-able facts of
    the action (counts, a reason, a verdict). Neither may hold a secret."""
    context = audit_context_current()
    if context is None:
        return None
    action = AuditAction(action)
    overrides: dict[str, Any] = {}
    if isinstance(target, type):
        instance = target()
        overrides = {"object_pk": "", "object_repr": str(target._meta.verbose_name_plural)}
    else:
        instance = target
    user = context.user
    return LogEntry.objects.log_create(
        instance,
        force_log=True,
        action=_KINDS.get(action.value.rsplit(".", 1)[1], LogEntry.Action.UPDATE),
        changes=changes or None,
        actor=user,
        actor_email=(user.email or None) if user is not None else None,
        remote_addr=context.remote_addr,
        timestamp=clock.now(),
        additional_data={
            "action": action.value,
            "source": context.source,
            "actor": context.actor_name,
            "detail": detail or {},
        },
        **overrides,
    )


def audit_changes(*, before: Model | None, after: Model | None, fields: Iterable[Field]) -> tuple[dict, list[str]]:
    """The fields whose value differs between two states of a row (None: not saved yet, or deleted), as
    {name: [before, after]}, and the names of the secrets among them. A secret (`EncryptedTextField`) is shown
    as `SECRET_SHOWN` when set and "" when empty: an entry says it changed, never what it was or became."""
    changes: dict[str, list[str]] = {}
    secrets: list[str] = []
    for field in fields:
        old = _shown(field, before)
        new = _shown(field, after)
        if isinstance(field, EncryptedTextField):
            old_value = field.value_from_object(before) if before is not None else ""
            new_value = field.value_from_object(after) if after is not None else ""
            if (old_value or "") != (new_value or ""):
                secrets.append(field.name)
                changes[field.name] = [SECRET_SHOWN if old_value else "", SECRET_SHOWN if new_value else ""]
        elif old != new:
            changes[field.name] = [old, new]
    return changes, secrets


def _shown(field: Field, row: Model | None) -> str:
    if row is None or isinstance(field, EncryptedTextField):
        return "None"
    return smart_str(field.value_from_object(row))
