"""The roles (auth groups) `viewer`, `operator` and `admin`, derived from rules rather than frozen lists, so a
permission a later migration or app adds joins its role by itself (README "Roles and permissions").

- viewer: the view permission of every model of the project's apps and of the installed apps whose rows an
  operator reads (periodic tasks, the audit trail); nothing of users, groups, tokens, sessions or lockouts.
- operator: viewer, plus every custom permission of the project's apps (run, test, import, operate, resolve;
  `OPERATOR_EXCLUDED` names any that stay the admin's), plus adding and changing what running campaigns and work
  orders creates (`OPERATOR_WRITES`).
- admin: every permission (accounts and their secrets, templates, users, groups, tokens), without being superuser.

`roles_ensure` runs after every migrate (and test flush): it creates missing groups and sets each group's
permissions to exactly its rule, so hand edits of these three groups are undone; make another group for a
variation.
"""

from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.db.models import Q

PROJECT_APPS = ("emailsys", "campaigns", "workorders", "processing", "transfers")
# Installed apps whose rows the viewer reads too (labels of apps that are not installed match nothing).
READ_APPS = ("django_celery_beat", "auditlog")
DEFAULT_ACTIONS = ("add", "change", "delete", "view")
# Custom permissions of the project's apps that the operator does not get (none yet).
OPERATOR_EXCLUDED: tuple[str, ...] = ()
# (app_label, model_name, actions) the operator may write: leads and recipients of campaigns, suppressions,
# contacts and work orders, import jobs.
OPERATOR_WRITES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("campaigns", "lead", ("add", "change")),
    ("campaigns", "recipient", ("add", "change")),
    ("campaigns", "suppression", ("add",)),
    ("workorders", "contact", ("add", "change")),
    ("workorders", "workorder", ("add", "change")),
    ("transfers", "importjob", ("add",)),  # uploading; each kind also needs what it writes (leads, contacts)
)


def _view_rule() -> Q:
    return Q(content_type__app_label__in=(*PROJECT_APPS, *READ_APPS), codename__startswith="view_")


def _custom_rule() -> Q:
    defaults = Q()
    for action in DEFAULT_ACTIONS:
        defaults |= Q(codename__startswith=f"{action}_")
    return Q(content_type__app_label__in=PROJECT_APPS) & ~defaults & ~Q(codename__in=OPERATOR_EXCLUDED)


def _writes_rule() -> Q:
    rule = Q(pk__in=[])
    for app_label, model_name, actions in OPERATOR_WRITES:
        codenames = [f"{action}_{model_name}" for action in actions]
        rule |= Q(content_type__app_label=app_label, content_type__model=model_name, codename__in=codenames)
    return rule


def role_rules() -> dict[str, Q]:
    """Each role's permissions as a filter on Permission."""
    return {
        "viewer": _view_rule(),
        "operator": _view_rule() | _custom_rule() | _writes_rule(),
        "admin": Q(),
    }


def roles_ensure(*, using: str = "default") -> dict[str, int]:
    """Creates the role groups if missing and gives each exactly the permissions of its rule; idempotent (a run
    that finds everything in place writes nothing). Returns the number of permissions per role."""
    counts = {}
    with transaction.atomic(using=using):
        for name, rule in role_rules().items():
            group, _ = Group.objects.using(using).get_or_create(name=name)
            wanted = set(Permission.objects.using(using).filter(rule).values_list("pk", flat=True))
            held = set(group.permissions.values_list("pk", flat=True))
            if wanted - held:
                group.permissions.add(*(wanted - held))
            if held - wanted:
                group.permissions.remove(*(held - wanted))
            counts[name] = len(wanted)
    return counts
