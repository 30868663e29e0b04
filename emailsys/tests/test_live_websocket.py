"""Live updates through the real ASGI application served by daphne, with a real WebSocket client: a group is
joined only by an active staff user holding the view permission of what it shows; an open socket is closed
when its session logs out or its user loses access — found by the periodic re-check, or at once when the client
sends a frame."""

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import websockets
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test import Client
from websockets.exceptions import ConnectionClosed, InvalidStatus

from emailsys.live import live_publish_now
from emailsys.testing import (
    ManagedProcess,
    daphne_argv,
    free_port,
    port_answers,
    process_env,
    start_process,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)

# The re-check interval the tests of the periodic re-check start daphne with (LIVE_SOCKET_RECHECK_SECONDS's
# alternative value; the shipped 60 s is tested by the frame-triggered re-check).
FAST_RECHECK_SECONDS = 1.0
# What a close may take beyond the interval: the query, the close frame, a loaded CI machine.
CLOSE_MARGIN_SECONDS = 2.0

DASHBOARD = ("campaigns.view_activity", "campaigns.view_campaign", "campaigns.view_senderaccount",
             "campaigns.view_sendrecord", "processing.view_emailresult", "processing.view_inboundemail",
             "workorders.view_mailingsend", "workorders.view_workorder")  # fmt: skip
GROUP_PERMISSIONS = {
    "dashboard": DASHBOARD,
    "workorder-42": ("workorders.view_workorder",),
    "campaign-3": ("campaigns.view_campaign",),
    "account-5": ("campaigns.view_senderaccount",),
}
# For each group, view permissions that are not enough: of another kind, or all the dashboard's but one.
OTHER_PERMISSION = {
    "dashboard": DASHBOARD[:-1],
    "workorder-42": ("campaigns.view_senderaccount",),
    "campaign-3": ("workorders.view_workorder",),
    "account-5": ("campaigns.view_campaign",),
}


@contextmanager
def daphne(tmp_path_factory: pytest.TempPathFactory, **env: str) -> Iterator[tuple[ManagedProcess, int]]:
    """One daphne for a module's tests (starting one takes seconds): they keep apart by their own users."""
    port = free_port()
    process = start_process(
        "daphne", daphne_argv(port), env=process_env(**env), log_dir=tmp_path_factory.mktemp("daphne")
    )
    try:
        wait_until(lambda: port_answers(port) or not process.alive, timeout=30, what="daphne listening")
        assert process.alive, f"daphne exited:\n{process.log()}"
        yield process, port
    finally:
        process.stop()


@pytest.fixture(scope="module")
def shipped_daphne(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[tuple[ManagedProcess, int]]:
    """daphne with the settings as shipped (a 60 s re-check)."""
    with django_db_blocker.unblock(), daphne(tmp_path_factory) as served:
        yield served


@pytest.fixture(scope="module")
def fast_recheck_daphne(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[tuple[ManagedProcess, int]]:
    with (
        django_db_blocker.unblock(),
        daphne(tmp_path_factory, LIVE_SOCKET_RECHECK_SECONDS=str(FAST_RECHECK_SECONDS)) as served,
    ):
        yield served


def serving(served: tuple[ManagedProcess, int]) -> Iterator[int]:
    """The port of a daphne, checked alive before and after a test; its log tail is shown when the test fails."""
    process, port = served
    assert process.alive, process.log()
    yield port
    print(f"\n===== daphne =====\n{process.log()}")
    assert process.alive


@pytest.fixture
def server_port(shipped_daphne) -> Iterator[int]:
    yield from serving(shipped_daphne)


@pytest.fixture
def fast_recheck_port(fast_recheck_daphne) -> Iterator[int]:
    yield from serving(fast_recheck_daphne)


def permission(name: str) -> Permission:
    app_label, codename = name.split(".")
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def staff_user(django_user_model, username: str, *perms: str, through_group: bool = False, is_staff: bool = True):
    user = django_user_model.objects.create_user(username, password="x", is_staff=is_staff)
    if through_group:
        group = Group.objects.create(name=f"{username}-role")
        group.permissions.set([permission(name) for name in perms])
        user.groups.add(group)
    else:
        user.user_permissions.set([permission(name) for name in perms])
    return user


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def cookie_of(client: Client) -> str:
    return f"sessionid={client.cookies['sessionid'].value}"


async def connect(port: int, cookie: str | None, group: str = "dashboard"):
    headers = {"Origin": f"http://127.0.0.1:{port}"}
    if cookie:
        headers["Cookie"] = cookie
    return await websockets.connect(f"ws://127.0.0.1:{port}/ws/live/{group}/", additional_headers=headers)


async def subscribe(port: int, cookie: str, group: str):
    socket = await connect(port, cookie, group)
    assert json.loads(await asyncio.wait_for(socket.recv(), timeout=10)) == {"type": "subscribed", "group": group}
    return socket


async def refused_status(port: int, cookie: str | None, group: str = "dashboard") -> int:
    with pytest.raises(InvalidStatus) as refused:
        await connect(port, cookie, group)
    return refused.value.response.status_code


async def relayed(socket, group: str, version: int) -> dict:
    """Publishes a snapshot to `group` and returns what `socket` received."""
    await asyncio.to_thread(live_publish_now, group=group, payload={"version": version})
    while True:  # the snapshots a group's objects send on connect (the dashboard's) come first
        message = json.loads(await asyncio.wait_for(socket.recv(), timeout=10))
        if "kind" not in message.get("payload", {}):
            return message


async def in_thread(change: Callable[..., None], *args) -> None:
    """Runs a database change off the event loop, closing the thread's connection after (test teardown drops the
    database, which open connections prevent)."""

    def run() -> None:
        try:
            change(*args)
        finally:
            connection.close()

    await asyncio.to_thread(run)


async def close_code(socket, *, timeout: float) -> int:
    """Waits for the server to close `socket`; its close code (messages before the close are dropped)."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            await asyncio.wait_for(socket.recv(), timeout=max(deadline - time.monotonic(), 0))
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "closed by the client, not the server"
        return closed.rcvd.code


@pytest.mark.parametrize("group", list(GROUP_PERMISSIONS))
def test_a_group_is_watched_only_with_the_view_permission_of_its_kind(server_port, django_user_model, group) -> None:
    viewer = logged_in(staff_user(django_user_model, "viewer", *GROUP_PERMISSIONS[group], through_group=True))
    other = logged_in(staff_user(django_user_model, "other", *OTHER_PERMISSION[group]))
    direct = logged_in(staff_user(django_user_model, "direct", *GROUP_PERMISSIONS[group]))

    async def scenario() -> tuple[dict, dict, int]:
        async with await subscribe(server_port, cookie_of(viewer), group) as socket:
            update = await relayed(socket, group, 7)
        async with await subscribe(server_port, cookie_of(direct), group) as socket:
            direct_update = await relayed(socket, group, 8)
        return update, direct_update, await refused_status(server_port, cookie_of(other), group)

    update, direct_update, other_status = asyncio.run(scenario())
    assert update == {"type": "update", "group": group, "payload": {"version": 7}}
    assert direct_update == {"type": "update", "group": group, "payload": {"version": 8}}
    assert other_status == 403


@pytest.mark.parametrize("who", ["anonymous", "non-staff", "inactive"])
def test_anonymous_non_staff_and_inactive_users_are_refused(server_port, django_user_model, who: str) -> None:
    cookie = None
    if who != "anonymous":
        user = staff_user(django_user_model, "reader", "workorders.view_workorder", is_staff=who == "inactive")
        client = logged_in(user)
        if who == "inactive":
            user.is_active = False
            user.save()
        cookie = cookie_of(client)

    assert asyncio.run(refused_status(server_port, cookie)) == 403


@pytest.mark.parametrize("group", ["lead-1", "workorder-abc", "workorder-0", "workorder", "dashboard-1", "Campaign-3"])
def test_a_group_that_is_not_a_live_group_is_refused_even_for_a_superuser(server_port, django_user_model, group):
    admin = django_user_model.objects.create_superuser("root", password="x")

    assert asyncio.run(refused_status(server_port, cookie_of(logged_in(admin)), group)) == 403


@pytest.mark.parametrize("path", ["/ws/other/", "/ws/live/bad%20name/", f"/ws/live/{'a' * 81}/", "/", "/admin/"])
def test_a_path_that_is_no_socket_is_refused_not_an_error(server_port, django_user_model, path: str) -> None:
    cookie = cookie_of(logged_in(django_user_model.objects.create_superuser("root", password="x")))

    async def scenario() -> int:
        headers = {"Origin": f"http://127.0.0.1:{server_port}", "Cookie": cookie}
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(f"ws://127.0.0.1:{server_port}{path}", additional_headers=headers)
        return refused.value.response.status_code

    assert asyncio.run(scenario()) == 403


def test_a_foreign_origin_is_refused_even_for_a_user_with_access(server_port, django_user_model) -> None:
    cookie = cookie_of(logged_in(staff_user(django_user_model, "operator", "workorders.view_workorder")))

    async def scenario() -> None:
        headers = {"Origin": "http://evil.example", "Cookie": cookie}
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(f"ws://127.0.0.1:{server_port}/ws/live/dashboard/", additional_headers=headers)
        assert refused.value.response.status_code == 403

    asyncio.run(scenario())


def log_out(user, client: Client) -> None:
    client.logout()  # deletes the session row, like the admin's "Log out"


def change_password(user, client: Client) -> None:
    user.set_password("a-new-password")
    user.save()


def deactivate(user, client: Client) -> None:
    user.is_active = False
    user.save()


def remove_staff(user, client: Client) -> None:
    user.is_staff = False
    user.save()


def remove_permission(user, client: Client) -> None:
    user.user_permissions.clear()


def delete_user(user, client: Client) -> None:
    user.delete()


@pytest.mark.parametrize(
    ("revoke", "expected_code"),
    [
        (log_out, 4401),
        (change_password, 4401),
        (deactivate, 4401),
        (delete_user, 4401),
        (remove_staff, 4403),
        (remove_permission, 4403),
    ],
)
def test_an_open_socket_is_closed_within_the_recheck_interval_when_its_user_loses_access(
    fast_recheck_port, django_user_model, revoke, expected_code: int
) -> None:
    """A second user on the same group keeps receiving: the re-check closes only the socket that lost access."""
    leaving = staff_user(django_user_model, "leaving", "workorders.view_workorder")
    leaving_client = logged_in(leaving)
    staying = logged_in(staff_user(django_user_model, "staying", "workorders.view_workorder", through_group=True))

    async def scenario() -> tuple[int, float, list[dict]]:
        async with (
            await subscribe(fast_recheck_port, cookie_of(leaving_client), "workorder-9") as leaving_socket,
            await subscribe(fast_recheck_port, cookie_of(staying), "workorder-9") as staying_socket,
        ):
            assert (await relayed(leaving_socket, "workorder-9", 1))["payload"] == {"version": 1}
            assert json.loads(await asyncio.wait_for(staying_socket.recv(), timeout=10))["payload"] == {"version": 1}
            await in_thread(revoke, leaving, leaving_client)
            revoked_at = time.monotonic()
            code = await close_code(leaving_socket, timeout=FAST_RECHECK_SECONDS + CLOSE_MARGIN_SECONDS)
            closed_after = time.monotonic() - revoked_at
            # Three more re-checks of the staying socket, which still relays.
            updates = []
            while time.monotonic() - revoked_at < 4 * FAST_RECHECK_SECONDS:
                updates.append(await relayed(staying_socket, "workorder-9", len(updates) + 2))
                await asyncio.sleep(FAST_RECHECK_SECONDS / 4)  # spaces the snapshots out over the re-checks
            return code, closed_after, updates

    code, closed_after, updates = asyncio.run(scenario())
    assert code == expected_code
    assert closed_after <= FAST_RECHECK_SECONDS + CLOSE_MARGIN_SECONDS
    assert [update["payload"]["version"] for update in updates] == list(range(2, len(updates) + 2))
    assert len(updates) >= 8


def test_a_frame_from_the_client_rechecks_its_access_at_once(server_port, django_user_model) -> None:
    """With the shipped 60 s interval: frames of a client with access are ignored (it keeps receiving); once its
    permission is gone, the next frame — even one that is not JSON — closes the socket within moments."""
    user = staff_user(django_user_model, "watcher", "campaigns.view_campaign")
    client = logged_in(user)

    async def scenario() -> tuple[dict, int, float]:
        async with await subscribe(server_port, cookie_of(client), "campaign-3") as socket:
            await socket.send("not json {")
            await socket.send(b"\x00\x01")
            await socket.send(json.dumps({"type": "ping"}))
            update = await relayed(socket, "campaign-3", 1)
            await in_thread(remove_permission, user, client)
            sent_at = time.monotonic()
            try:
                await socket.send("are we still on?")
            except ConnectionClosed as closed:  # the server's close can beat the end of our own send
                assert closed.rcvd is not None, "closed by the client, not the server"
                return update, closed.rcvd.code, time.monotonic() - sent_at
            code = await close_code(socket, timeout=CLOSE_MARGIN_SECONDS)
            return update, code, time.monotonic() - sent_at

    update, code, closed_after = asyncio.run(scenario())
    assert update == {"type": "update", "group": "campaign-3", "payload": {"version": 1}}
    assert code == 4403
    assert closed_after < CLOSE_MARGIN_SECONDS
