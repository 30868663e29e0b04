"""Edits of configuration rows (sender accounts, templates), whichever entry point saves them — the admin's form,
the API's serializer, the campaign import — recorded with their field diffs (`audit_changes`: secrets only as
changed). The one tap on model signals of the audit trail; it decides nothing.

Hot path: sender accounts are saved by the sending path too (the arbiter's failure count and pauses). Outside an
operator's context the receivers return at once (one context-variable read, no query), and inside one a save of
runtime fields only (`update_fields` within the exclusions) is not even read back. Runtime fields and status are
never diffed: an account's status changes only through `account_set_status`, which records its own action."""

from dataclasses import dataclass

from django.apps import apps
from django.db.models import Field, Model
from django.db.models.signals import post_delete, post_save, pre_save

from audit.actions import AuditAction
from audit.services import audit_active, audit_changes, audit_record


@dataclass(frozen=True)
class TrackedEdits:
    create: AuditAction
    update: AuditAction
    delete: AuditAction
    untracked: frozenset[str] = frozenset()


TRACKED_EDITS = {
    "campaigns.SenderAccount": TrackedEdits(
        AuditAction.ACCOUNT_CREATE,
        AuditAction.ACCOUNT_UPDATE,
        AuditAction.ACCOUNT_DELETE,
        frozenset(
            {
                "status",
                "status_reason",
                "consecutive_failures",
                "last_reserved_at",
                "next_available_at",
                "busy_until",
                "created_at",
            }
        ),
    ),  # fmt: skip
    "campaigns.EmailTemplate": TrackedEdits(
        AuditAction.TEMPLATE_CREATE,
        AuditAction.TEMPLATE_UPDATE,
        AuditAction.TEMPLATE_DELETE,
        frozenset({"created_at", "updated_at"}),
    ),
}
_BEFORE = "_audit_before"


def edits_track() -> None:
    for label in TRACKED_EDITS:
        model = apps.get_model(label)
        uid = f"audit-edits-{label}"
        pre_save.connect(_before_save, sender=model, dispatch_uid=uid, weak=False)
        post_save.connect(_after_save, sender=model, dispatch_uid=uid, weak=False)
        post_delete.connect(_after_delete, sender=model, dispatch_uid=uid, weak=False)


def _tracked(model: type[Model]) -> tuple[TrackedEdits, list[Field]]:
    tracked = TRACKED_EDITS[model._meta.label]
    return tracked, [f for f in model._meta.concrete_fields if not f.primary_key and f.name not in tracked.untracked]


def _before_save(sender: type[Model], instance: Model, update_fields=None, raw: bool = False, **kwargs) -> None:
    if raw or not audit_active() or instance._state.adding or instance.pk is None:
        return
    _, fields = _tracked(sender)
    if update_fields is not None and not {f.name for f in fields} & set(update_fields):
        return
    setattr(instance, _BEFORE, sender._base_manager.filter(pk=instance.pk).first())


def _after_save(sender: type[Model], instance: Model, created: bool, update_fields=None, raw=False, **kwargs) -> None:
    if raw or not audit_active():
        return
    before = instance.__dict__.pop(_BEFORE, None)
    if not created and before is None:
        return  # nothing tracked was saved (or the row vanished meanwhile)
    tracked, fields = _tracked(sender)
    if update_fields is not None:
        fields = [f for f in fields if f.name in update_fields]
    changes, secrets = audit_changes(before=None if created else before, after=instance, fields=fields)
    if changes or created:
        action = tracked.create if created else tracked.update
        detail = {"secrets_changed": secrets} if secrets else None
        audit_record(action=action, target=instance, changes=changes, detail=detail)


def _after_delete(sender: type[Model], instance: Model, **kwargs) -> None:
    if audit_active():
        tracked, _ = _tracked(sender)
        audit_record(action=tracked.delete, target=instance)
