"""WS /ws/emails/{client_id} through daphne with a real WebSocket client: the seed's `email_event` messages
(queue, then process with the result) and coalesced `stats_update`s reach a logged-in user holding the inbound
view permissions; anyone else is refused at the handshake."""

import asyncio
import json
from collections.abc import Iterator

import pytest
import websockets
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from websockets.exceptions import InvalidStatus

from emailsys.testing import daphne_argv, free_port, port_answers, process_env, wait_until
from processing.services.events import email_processed, email_queued
from processing.tests.inbound_rows import email_make, result_make

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.xdist_group("api-processes")]


@pytest.fixture
def port(processes) -> Iterator[int]:
    number = free_port()
    daphne = processes("daphne", daphne_argv(number), env=process_env())
    wait_until(lambda: port_answers(number) or not daphne.alive, timeout=30, what="daphne listening")
    assert daphne.alive
    yield number


def cookie_for(django_user_model, username: str, *codenames: str, is_staff: bool = True) -> str:
    user = django_user_model.objects.create_user(username, password="x", is_staff=is_staff)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="processing", codename__in=codenames))
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def connect(port: int, cookie: str | None, client_id: str = "client-1"):
    headers = {"Origin": f"http://127.0.0.1:{port}", **({"Cookie": cookie} if cookie else {})}
    return websockets.connect(f"ws://127.0.0.1:{port}/ws/emails/{client_id}", additional_headers=headers)


async def next_of(socket, kind: str, **fields) -> dict:
    while True:
        message = json.loads(await asyncio.wait_for(socket.recv(), timeout=10))
        if message["type"] == kind and all(message.get(key) == value for key, value in fields.items()):
            return message


def test_events_and_stats_reach_a_permitted_client(port, django_user_model) -> None:
    cookie = cookie_for(django_user_model, "watcher", "view_inboundemail", "view_emailresult")
    email = email_make(email_id="live-1", subject="Demo call")

    def pipeline() -> None:
        try:
            email_queued(email)
            result = result_make(email, classification="meeting", confidence=0.93)
            email_processed(email, result)
        finally:
            connection.close()

    async def scenario() -> tuple[dict, dict, dict, dict]:
        async with connect(port, cookie) as socket:
            first = json.loads(await asyncio.wait_for(socket.recv(), timeout=10))
            await asyncio.to_thread(pipeline)
            queued = await next_of(socket, "email_event", event="queue")
            processed = await next_of(socket, "email_event", event="process")
            while True:
                stats = await next_of(socket, "stats_update")
                if stats["data"]["totals"]["classified"] == 1:
                    return first, queued, processed, stats

    first, queued, processed, stats = asyncio.run(scenario())
    assert first["type"] == "stats_update"
    assert first["data"]["totals"]["received"] == 1
    assert queued["data"]["email_id"] == "live-1"
    assert queued["timestamp"]
    data = processed["data"]
    assert (data["email_id"], data["classification"], data["confidence"]) == ("live-1", "meeting", 0.93)
    assert data["processed_at"] and data["processor_id"]
    assert stats["data"]["by_class"]["meeting"] == 1


def test_refused_without_login_staff_or_permission(port, django_user_model) -> None:
    cookies = [
        None,
        cookie_for(django_user_model, "no-perms"),
        cookie_for(django_user_model, "half", "view_inboundemail"),
        cookie_for(django_user_model, "outsider", "view_inboundemail", "view_emailresult", is_staff=False),
    ]

    async def status(cookie: str | None) -> int:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(port, cookie):
                pass
        return refused.value.response.status_code

    assert [asyncio.run(status(cookie)) for cookie in cookies] == [403, 403, 403, 403]
