"""Who may watch a live group (the one table of group kind → view permission), and the check behind it.

A live socket is for an active staff user, logged in by a session that still exists, holding the view
permission of every object kind the group shows. The consumer asks at the handshake, on every message the client
sends, and every LIVE_SOCKET_RECHECK_SECONDS while the socket is open; each check is one query. Group names are
those of emailsys/live.py: `dashboard`, `<kind>-<id>`.
"""

import re
from dataclasses import dataclass
from enum import IntEnum
from importlib import import_module
from urllib.parse import parse_qs

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.models import Permission
from django.db.models import Exists, OuterRef, Subquery
from django.utils import timezone
from django.utils.crypto import constant_time_compare


@dataclass(frozen=True)
class LiveGroupKind:
    permissions: tuple[str, ...]  # all required ("app_label.codename"); a superuser holds every one
    per_object: bool  # True: groups `<kind>-<id>`; False: one group named like the kind
    # A list page's socket (`/ws/live/workorders/?ids=1,2,3`) joins the groups of these objects of this kind.
    members: str = ""


# A service that publishes another kind of snapshot to a group must add that kind's view permission here.
LIVE_GROUP_KINDS: dict[str, LiveGroupKind] = {
    # The dashboard's panels show all of these to every watcher (emailsys.dashboard.DASHBOARD_PERMISSIONS).
    "dashboard": LiveGroupKind(
        permissions=(
            "campaigns.view_activity",
            "campaigns.view_campaign",
            "campaigns.view_senderaccount",
            "campaigns.view_sendrecord",
            "processing.view_emailresult",
            "processing.view_inboundemail",
            "workorders.view_mailingsend",
            "workorders.view_workorder",
        ),
        per_object=False,
    ),  # fmt: skip
    "workorder": LiveGroupKind(permissions=("workorders.view_workorder",), per_object=True),
    "campaign": LiveGroupKind(permissions=("campaigns.view_campaign",), per_object=True),
    "account": LiveGroupKind(permissions=("campaigns.view_senderaccount",), per_object=True),
    "workorders": LiveGroupKind(permissions=("workorders.view_workorder",), per_object=False, members="workorder"),
    "campaigns": LiveGroupKind(permissions=("campaigns.view_campaign",), per_object=False, members="campaign"),
    "accounts": LiveGroupKind(permissions=("campaigns.view_senderaccount",), per_object=False, members="account"),
    "importjob": LiveGroupKind(permissions=("transfers.view_importjob",), per_object=True),
}
LIST_GROUP_MAX_OBJECTS = 200  # a list page shows at most this many (the admin's list_per_page is 100)
GROUP_NAME = re.compile(r"(?P<kind>[a-z]+)(?:-(?P<id>[1-9][0-9]{0,18}))?")


class LiveRefusal(IntEnum):
    """Why a socket is refused or closed: its close code (4000–4999 are the application's, RFC 6455 7.4.2)."""

    LOGGED_OUT = 4401  # no valid login any more: session gone or expired, password changed, user deactivated
    FORBIDDEN = 4403  # logged in, but not staff or without the group's view permission; or not a live group


def live_list_members(group: str, query_string: bytes) -> list[str] | None:
    """The groups a list page's socket joins instead of `group` (`ids=1,2,3` in its query string), or None when
    `group` is no list kind. Ids that are not positive integers, and any beyond LIST_GROUP_MAX_OBJECTS, are
    ignored."""
    kind = LIVE_GROUP_KINDS.get(group)
    if kind is None or not kind.members:
        return None
    ids = parse_qs(query_string.decode("latin-1")).get("ids", [""])[0].split(",")
    valid = dict.fromkeys(value for value in ids if value.isdigit() and 0 < len(value) < 19 and value[0] != "0")
    return [f"{kind.members}-{value}" for value in list(valid)[:LIST_GROUP_MAX_OBJECTS]]


def live_group_permissions(group: str) -> tuple[str, ...] | None:
    """The permissions a user needs to join `group`, or None when it is not a live group."""
    match = GROUP_NAME.fullmatch(group)
    kind = LIVE_GROUP_KINDS.get(match["kind"]) if match else None
    if kind is None or kind.per_object != bool(match["id"]):
        return None
    return kind.permissions


def live_socket_refusal(
    *, session_key: str | None, user_id: int | None, permissions: tuple[str, ...]
) -> LiveRefusal | None:
    """None when the user of the session `session_key` may still watch a group needing `permissions`, else why not.

    One query: the user row with its session's data and, per permission, whether the user holds it directly or
    through a group (the rules of Django's ModelBackend). The session must still exist, name this user, and carry
    the user's current auth hash (a password change logs every other session out), as django.contrib.auth checks
    on each request.
    """
    if not session_key or user_id is None:
        return LiveRefusal.LOGGED_OUT
    store_class = import_module(settings.SESSION_ENGINE).SessionStore
    holds = {}
    for number, permission in enumerate(permissions):
        app_label, codename = permission.split(".", 1)
        granted = Permission.objects.filter(content_type__app_label=app_label, codename=codename)
        holds[f"live_direct_{number}"] = Exists(granted.filter(user=OuterRef("pk")))
        holds[f"live_group_{number}"] = Exists(granted.filter(group__user=OuterRef("pk")))
    users = get_user_model()._default_manager.filter(pk=user_id).annotate(**holds)
    if hasattr(store_class, "get_model_class"):  # database-backed sessions: read in the same query
        sessions = store_class.get_model_class().objects.filter(session_key=session_key, expire_date__gt=timezone.now())
        user = users.annotate(live_session_data=Subquery(sessions.values("session_data")[:1])).first()
        session = store_class().decode(user.live_session_data) if user and user.live_session_data else {}
    else:  # cache-only sessions: a cache read, then the query
        session, user = store_class(session_key).load(), users.first()
    if user is None or not _session_logs_in(session, user):
        return LiveRefusal.LOGGED_OUT
    if not user.is_active:
        return LiveRefusal.LOGGED_OUT
    if not user.is_staff:
        return LiveRefusal.FORBIDDEN
    if not user.is_superuser and not all(
        getattr(user, f"live_direct_{number}") or getattr(user, f"live_group_{number}")
        for number in range(len(permissions))
    ):
        return LiveRefusal.FORBIDDEN
    return None


def _session_logs_in(session: dict, user) -> bool:
    if session.get(SESSION_KEY) != str(user.pk):
        return False
    if session.get(BACKEND_SESSION_KEY) not in settings.AUTHENTICATION_BACKENDS:
        return False
    session_hash = session.get(HASH_SESSION_KEY) or ""
    return bool(session_hash) and any(
        constant_time_compare(session_hash, auth_hash)
        for auth_hash in (user.get_session_auth_hash(), *user.get_session_auth_fallback_hash())
    )
