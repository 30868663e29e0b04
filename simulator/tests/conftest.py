from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from emailsys.testing import HttpRequestRecord, RecordingHttpServer


@pytest.fixture
def simulator_url(live_server, settings) -> str:
    """The simulator of a live server in this process; autoconnect off unless a test turns it on (it would subscribe
    mailboxes to the INBOUND_WEBHOOK_URL setting)."""
    settings.INBOUND_SIMULATOR_AUTOCONNECT = False
    return f"{live_server.url}/simulator"


@pytest.fixture
def flaky_server() -> Iterator[Callable[..., RecordingHttpServer]]:
    """Starts real HTTP servers on loopback that answer the first `failures` requests with `fail_status`, then 200
    with `reply`, recording every request: a provider or a webhook receiver that fails."""
    with ExitStack() as servers:

        def start(*, failures: int, fail_status: int = 503, reply: dict | None = None) -> RecordingHttpServer:
            def answer(record: HttpRequestRecord) -> tuple[int, dict]:
                return (fail_status, {"detail": "try later"}) if record.number <= failures else (200, reply or {})

            return servers.enter_context(RecordingHttpServer(reply=answer))

        yield start
