"""Who may watch a live group (emailsys/live_access.py): group names, permissions as Django's ModelBackend grants
them, a login session that must still be valid — in one query — and the consumer's re-check timer, which ends
with its connection whichever way it ends."""

import asyncio
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group, Permission
from django.contrib.sessions.models import Session
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone

from emailsys.asgi import application
from emailsys.live_access import LiveRefusal, live_group_permissions, live_socket_refusal
from emailsys.testing import BASE_DIR

VIEW_WORKORDER = "workorders.view_workorder"
VIEW_CAMPAIGN = "campaigns.view_campaign"
DASHBOARD_PERMISSIONS = (
    "campaigns.view_activity", "campaigns.view_campaign", "campaigns.view_senderaccount",
    "campaigns.view_sendrecord", "processing.view_emailresult", "processing.view_inboundemail",
    "workorders.view_mailingsend", "workorders.view_workorder",
)  # fmt: skip


def permission(name: str) -> Permission:
    app_label, codename = name.split(".")
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def login_session_key(user) -> str:
    client = Client()
    client.force_login(user)
    return client.session.session_key


@pytest.mark.parametrize(
    ("group", "permissions"),
    [
        ("dashboard", DASHBOARD_PERMISSIONS),
        ("workorders", (VIEW_WORKORDER,)),
        ("campaigns", (VIEW_CAMPAIGN,)),
        ("workorder-42", (VIEW_WORKORDER,)),
        ("campaign-3", (VIEW_CAMPAIGN,)),
        ("account-5", ("campaigns.view_senderaccount",)),
        ("workorder-9223372036854775807", (VIEW_WORKORDER,)),
    ],
)
def test_a_live_group_needs_the_view_permission_of_its_kind(group: str, permissions: tuple[str, ...]) -> None:
    assert live_group_permissions(group) == permissions


@pytest.mark.parametrize(
    "group",
    ["lead-1", "workorder", "workorder-", "workorder-0", "workorder-07", "workorder-x", "dashboard-1", "Dashboard"],
)
def test_any_other_group_name_is_not_a_live_group(group: str) -> None:
    assert live_group_permissions(group) is None


@pytest.mark.django_db
def test_permissions_are_granted_as_django_grants_them(django_user_model) -> None:
    """Directly or through a group, superusers hold all; and only for active staff."""
    role = Group.objects.create(name="watchers")
    role.permissions.add(permission(VIEW_WORKORDER))

    def user(username: str, *, perms=(), group=False, **fields):
        account = django_user_model.objects.create_user(username, password="x", **{"is_staff": True, **fields})
        account.user_permissions.set([permission(name) for name in perms])
        if group:
            account.groups.add(role)
        return account

    users = {
        "superuser": django_user_model.objects.create_superuser("root", password="x"),
        "direct": user("direct", perms=[VIEW_WORKORDER]),
        "through a group": user("grouped", group=True),
        "another permission": user("other", perms=[VIEW_CAMPAIGN]),
        "no permission": user("none"),
        "not staff": user("notstaff", perms=[VIEW_WORKORDER], group=True, is_staff=False),
        "inactive": user("inactive", perms=[VIEW_WORKORDER], is_active=False),
    }
    sessions = {name: login_session_key(account) for name, account in users.items()}

    refusals = {
        name: live_socket_refusal(session_key=sessions[name], user_id=account.pk, permissions=(VIEW_WORKORDER,))
        for name, account in users.items()
    }

    assert refusals == {
        "superuser": None,
        "direct": None,
        "through a group": None,
        "another permission": LiveRefusal.FORBIDDEN,
        "no permission": LiveRefusal.FORBIDDEN,
        "not staff": LiveRefusal.FORBIDDEN,
        "inactive": LiveRefusal.LOGGED_OUT,
    }
    for name, account in users.items():
        fresh = django_user_model.objects.get(pk=account.pk)
        assert (refusals[name] is None) == (fresh.is_active and fresh.is_staff and fresh.has_perm(VIEW_WORKORDER))


@pytest.mark.django_db
def test_a_group_needing_several_permissions_needs_every_one(django_user_model) -> None:
    user = django_user_model.objects.create_user("watcher", password="x", is_staff=True)
    user.user_permissions.add(permission(VIEW_WORKORDER))
    session_key = login_session_key(user)
    both = (VIEW_WORKORDER, VIEW_CAMPAIGN)

    assert live_socket_refusal(session_key=session_key, user_id=user.pk, permissions=both) == LiveRefusal.FORBIDDEN
    user.groups.add(Group.objects.create(name="campaign watchers"))
    user.groups.get().permissions.add(permission(VIEW_CAMPAIGN))
    assert live_socket_refusal(session_key=session_key, user_id=user.pk, permissions=both) is None


@pytest.mark.django_db
def test_the_check_is_one_query(django_user_model, django_assert_num_queries) -> None:
    user = django_user_model.objects.create_user("watcher", password="x", is_staff=True)
    user.groups.add(Group.objects.create(name="watchers"))
    user.groups.get().permissions.add(permission(VIEW_WORKORDER), permission(VIEW_CAMPAIGN))
    session_key = login_session_key(user)

    with django_assert_num_queries(1):
        refusal = live_socket_refusal(
            session_key=session_key, user_id=user.pk, permissions=(VIEW_WORKORDER, VIEW_CAMPAIGN)
        )
    assert refusal is None


def log_out(client: Client, user) -> None:
    client.logout()


def expire_session(client: Client, user) -> None:
    Session.objects.filter(session_key=client.session.session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )


def change_password(client: Client, user) -> None:
    user.set_password("a-new-password")
    user.save()


@pytest.mark.django_db
@pytest.mark.parametrize("end", [log_out, expire_session, change_password])
def test_a_session_that_no_longer_logs_in_is_logged_out(django_user_model, end) -> None:
    user = django_user_model.objects.create_superuser("root", password="x")
    client = Client()
    client.force_login(user)
    session_key = client.session.session_key
    assert live_socket_refusal(session_key=session_key, user_id=user.pk, permissions=(VIEW_WORKORDER,)) is None

    end(client, user)

    assert live_socket_refusal(session_key=session_key, user_id=user.pk, permissions=(VIEW_WORKORDER,)) == (
        LiveRefusal.LOGGED_OUT
    )


@pytest.mark.django_db
def test_a_session_counts_only_for_the_user_it_logged_in(django_user_model) -> None:
    root = django_user_model.objects.create_superuser("root", password="x")
    other = django_user_model.objects.create_superuser("other", password="x")
    session_key = login_session_key(other)

    assert live_socket_refusal(session_key=session_key, user_id=root.pk, permissions=()) == LiveRefusal.LOGGED_OUT
    assert live_socket_refusal(session_key=None, user_id=root.pk, permissions=()) == LiveRefusal.LOGGED_OUT
    assert live_socket_refusal(session_key=session_key, user_id=other.pk, permissions=()) is None


@pytest.mark.django_db
def test_a_rotated_secret_key_keeps_sessions_while_the_old_key_is_a_fallback(django_user_model, settings) -> None:
    """SECRET_KEY_FALLBACKS's purpose: rotating the key does not log everybody out (as for HTTP requests)."""
    user = django_user_model.objects.create_superuser("root", password="x")
    session_key = login_session_key(user)
    old_key = settings.SECRET_KEY

    with override_settings(SECRET_KEY="a-new-secret-key-" + "x" * 40, SECRET_KEY_FALLBACKS=[old_key]):
        assert live_socket_refusal(session_key=session_key, user_id=user.pk, permissions=(VIEW_WORKORDER,)) is None
    with override_settings(SECRET_KEY="a-new-secret-key-" + "x" * 40, SECRET_KEY_FALLBACKS=[]):
        assert live_socket_refusal(session_key=session_key, user_id=user.pk, permissions=(VIEW_WORKORDER,)) == (
            LiveRefusal.LOGGED_OUT
        )


def close_connection() -> None:
    connection.close()


def open_recheck_timers() -> int:
    return sum(1 for task in asyncio.all_tasks() if task.get_name().startswith("live-recheck") and not task.done())


@pytest.mark.django_db(transaction=True)
def test_the_recheck_timer_ends_with_its_connection(django_user_model) -> None:
    """The real ASGI application in process (the only place its tasks can be counted): the timer runs while the
    socket is open and is gone after the client leaves, after the server closes the socket, and after the server
    cancels the application."""
    user = django_user_model.objects.create_user("watcher", password="x", is_staff=True)
    view_workorder = permission(VIEW_WORKORDER)
    user.user_permissions.add(view_workorder)
    client = Client()
    client.force_login(user)
    headers = [(b"origin", b"http://testserver"), (b"cookie", f"sessionid={client.session.session_key}".encode())]

    async def subscribed() -> WebsocketCommunicator:
        communicator = WebsocketCommunicator(application, "/ws/live/workorder-1/", headers=headers)
        connected, _ = await communicator.connect(timeout=10)
        assert connected
        assert await communicator.receive_json_from(timeout=10) == {"type": "subscribed", "group": "workorder-1"}
        return communicator

    async def scenario() -> dict[str, tuple[int, int]]:
        timers = {}
        communicator = await subscribed()
        timers["client left"] = (open_recheck_timers(), 0)
        await communicator.disconnect()
        timers["client left"] = (timers["client left"][0], open_recheck_timers())

        communicator = await subscribed()
        before = open_recheck_timers()
        await database_sync_to_async(user.user_permissions.clear)()
        await communicator.send_to(text_data="still allowed?")
        assert await communicator.receive_output(timeout=10) == {"type": "websocket.close", "code": 4403}
        await communicator.disconnect()  # the server's websocket.disconnect after its close
        timers["server closed"] = (before, open_recheck_timers())
        await database_sync_to_async(user.user_permissions.add)(view_workorder)

        communicator = await subscribed()
        before = open_recheck_timers()
        communicator.future.cancel()
        with pytest.raises(asyncio.CancelledError):
            await communicator.future
        timers["application cancelled"] = (before, open_recheck_timers())
        await database_sync_to_async(close_connection)()  # the consumers' thread's, so the test database can go
        return timers

    assert asyncio.run(scenario()) == {"client left": (1, 0), "server closed": (1, 0), "application cancelled": (1, 0)}


@pytest.mark.parametrize("value", ["0", "61", "soon"])
def test_a_recheck_interval_outside_a_minute_is_a_clear_configuration_error(value: str) -> None:
    """Sockets must be re-checked at least every minute; 0 would re-check without pause."""
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "emailsys.settings.test", "LIVE_SOCKET_RECHECK_SECONDS": value},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"Configuration error: LIVE_SOCKET_RECHECK_SECONDS must be seconds above 0 and at most 60, not '{value}'"
    )
