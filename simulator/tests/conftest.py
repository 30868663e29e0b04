import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@pytest.fixture
def simulator_url(live_server, settings) -> str:
    """The simulator of a live server in this process; autoconnect off unless a test turns it on (it would subscribe
    mailboxes to the INBOUND_WEBHOOK_URL setting)."""
    settings.INBOUND_SIMULATOR_AUTOCONNECT = False
    return f"{live_server.url}/simulator"


class FlakyServer:
    """A real HTTP server on loopback that answers the first `failures` requests with `fail_status`, then 200 with
    `reply`; records each request's path and headers. Stands in for a provider or a webhook receiver that fails."""

    def __init__(self, *, failures: int, fail_status: int = 503, reply: dict | None = None) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with server.lock:
                    server.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                    failing = len(server.requests) <= failures
                body = json.dumps({"detail": "try later"} if failing else (reply or {})).encode()
                self.send_response(fail_status if failing else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def flaky_server() -> Iterator[Callable[..., FlakyServer]]:
    started: list[FlakyServer] = []

    def start(**kwargs) -> FlakyServer:
        started.append(FlakyServer(**kwargs))
        return started[-1]

    yield start
    for server in started:
        server.close()
