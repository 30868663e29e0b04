"""Live updates through the real ASGI application served by daphne: staff receive channel-layer messages;
anonymous and non-staff users are refused at the handshake."""

import asyncio
import json

import pytest
import websockets
from django.test import Client
from websockets.exceptions import InvalidStatus

from emailsys.live import live_publish_now
from emailsys.testing import daphne_argv, free_port, port_answers, process_env, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server_port(processes) -> int:
    port = free_port()
    daphne = processes("daphne", daphne_argv(port), env=process_env())
    wait_until(lambda: port_answers(port), timeout=30, what="daphne listening")
    assert daphne.alive
    return port


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


async def connect(port: int, cookie: str | None, group: str = "dashboard"):
    headers = {"Origin": f"http://127.0.0.1:{port}"}
    if cookie:
        headers["Cookie"] = cookie
    return await websockets.connect(f"ws://127.0.0.1:{port}/ws/live/{group}/", additional_headers=headers)


def test_staff_user_receives_messages_published_on_the_channel_layer(server_port, django_user_model) -> None:
    staff = django_user_model.objects.create_user("operator", password="x", is_staff=True)
    cookie = session_cookie(staff)

    async def scenario() -> dict:
        async with await connect(server_port, cookie) as socket:
            subscribed = json.loads(await asyncio.wait_for(socket.recv(), timeout=10))
            assert subscribed == {"type": "subscribed", "group": "dashboard"}
            await asyncio.to_thread(live_publish_now, group="dashboard", payload={"version": 7, "state": "running"})
            return json.loads(await asyncio.wait_for(socket.recv(), timeout=10))

    update = asyncio.run(scenario())
    assert update == {"type": "update", "group": "dashboard", "payload": {"version": 7, "state": "running"}}


@pytest.mark.parametrize("who", ["anonymous", "non-staff"])
def test_anonymous_and_non_staff_users_are_refused(server_port, django_user_model, who: str) -> None:
    cookie = None
    if who == "non-staff":
        cookie = session_cookie(django_user_model.objects.create_user("reader", password="x", is_staff=False))

    async def scenario() -> None:
        with pytest.raises(InvalidStatus) as refused:
            await connect(server_port, cookie)
        assert refused.value.response.status_code == 403

    asyncio.run(scenario())


def test_a_foreign_origin_is_refused_even_for_staff(server_port, django_user_model) -> None:
    cookie = session_cookie(django_user_model.objects.create_user("operator2", password="x", is_staff=True))

    async def scenario() -> None:
        headers = {"Origin": "http://evil.example", "Cookie": cookie}
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(f"ws://127.0.0.1:{server_port}/ws/live/dashboard/", additional_headers=headers)
        assert refused.value.response.status_code == 403

    asyncio.run(scenario())
