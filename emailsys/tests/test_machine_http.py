"""The ASGI app as daphne serves it: machine paths (POST /webhook, /simulator/) answer through Django without the
browser middleware, every other path keeps all of it."""

import asyncio
import json

import pytest
from channels.testing import HttpCommunicator

from emailsys.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def _request(method: str, path: str, body: dict | None = None) -> tuple[int, dict[str, str], bytes]:
    payload = json.dumps(body).encode() if body is not None else b""
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]
    communicator = HttpCommunicator(application, method, path, body=payload, headers=headers)
    answer = await communicator.get_response(timeout=10)
    return answer["status"], {k.decode().lower(): v.decode() for k, v in answer["headers"]}, answer["body"]


def request(method: str, path: str, body: dict | None = None) -> tuple[int, dict[str, str], bytes]:
    return asyncio.run(_request(method, path, body))


def test_webhook_answers_without_browser_middleware() -> None:
    status, headers, body = request("POST", "/webhook", {"email_address": "x@example.com", "history_id": 1})
    assert status == 401
    assert json.loads(body)["detail"].startswith("Missing signature header(s)")
    assert "content-security-policy" not in headers and "set-cookie" not in headers


def test_the_simulator_api_is_served_and_its_unknown_paths_are_404s() -> None:
    status, _, body = request(
        "POST",
        "/simulator/send_email",
        {"from": "a@example.org", "to": "inbox@example.com", "subject": "Hi", "body": "."},
    )
    assert status == 201, body
    assert set(json.loads(body)) >= {"email_id", "history_id"}
    status, _, _ = request("GET", "/simulator/no-such-thing")
    assert status == 404


def test_browser_paths_keep_their_middleware() -> None:
    status, headers, _ = request("GET", "/admin/login/")
    assert status == 200
    assert "content-security-policy" in headers and "csrftoken" in headers.get("set-cookie", "")
