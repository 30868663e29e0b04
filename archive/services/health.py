"""The archiver's health: a heartbeat in Redis that the web's /healthz can read (`archiver_health`), and the
archiver's own /livez, /readyz and /metrics (`archive_emails --health-port`), for running it as its own
deployment."""

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.conf import settings
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from archive.metrics import REGISTRY
from emailsys.health import process_heartbeat_health, process_heartbeat_record, process_heartbeats_key

logger = logging.getLogger(__name__)
ROLE = "archiver"
HEARTBEATS_KEY = process_heartbeats_key(ROLE)  # emailsys.health's process heartbeats, as the SQS bridge's


def archiver_heartbeat_write(*, archived: int, failed: int) -> None:
    """Records that this archiver's loop is alive. Redis being away is logged, never raised: the loop goes on."""
    process_heartbeat_record(role=ROLE, extra={"archived": archived, "failed": failed})


def archiver_health(*, host: str | None = None) -> dict:
    """For /healthz: healthy while some archiver's heartbeat (on `host` only, when given) is fresher than
    ARCHIVE_HEARTBEAT_MAX_AGE seconds. {"healthy", "detail", "archivers" (fresh ones), "last_heartbeat_age_seconds"}.
    Never raises. Heartbeats older than ten times the limit are forgotten (archivers gone for good)."""
    health = process_heartbeat_health(role=ROLE, max_age_seconds=settings.ARCHIVE_HEARTBEAT_MAX_AGE, host=host)
    return {"healthy": health.healthy, "detail": health.detail, "archivers": health.extra.get("alive", 0),
            "last_heartbeat_age_seconds": health.extra.get("last_heartbeat_age_s")}  # fmt: skip


Probe = Callable[[], tuple[bool, dict]]


def archiver_health_server(*, host: str, port: int, live: Probe, ready: Probe) -> ThreadingHTTPServer:
    """Serves /livez (`live`), /readyz (`ready`) and /metrics in a daemon thread; returns the server (its
    server_address has the port when 0 was asked). A probe returns (ok, details): 200 or 503 with the details as
    JSON. /metrics wants `Authorization: Bearer <METRICS_BEARER_TOKEN>` when that setting is set."""
    token = settings.METRICS_BEARER_TOKEN

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the base class's name
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                if token and self.headers.get("Authorization") != f"Bearer {token}":
                    return self._answer(401, b"unauthorized\n", "text/plain")
                return self._answer(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            probe = {"/livez": live, "/readyz": ready}.get(path)
            if probe is None:
                return self._answer(404, b"not found\n", "text/plain")
            try:
                ok, details = probe()
            except Exception as error:  # noqa: BLE001 - a failing probe is an unhealthy answer
                ok, details = False, {"error": f"{type(error).__name__}: {error}"[:300]}
            body = json.dumps({"status": "ok" if ok else "unhealthy", **details}).encode()
            return self._answer(200 if ok else 503, body, "application/json")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="archive-health", daemon=True).start()
    return server
