"""The archiver's health: a heartbeat in Redis that the web's /healthz can read (`archiver_health`), and the
archiver's own /livez, /readyz and /metrics (`archive_emails --health-port`), for running it as its own
deployment."""

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.conf import settings
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from archive.metrics import REGISTRY
from emailsys.ops_clients import ops_redis

logger = logging.getLogger(__name__)
HEARTBEATS_KEY = "archive:heartbeats"  # hash: "<host>:<pid>" → {"at": unix time, "archived": n, "failed": n}


def archiver_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def archiver_heartbeat_write(*, archived: int, failed: int) -> None:
    """Records that this archiver's loop is alive. Redis being away is logged, never raised: the loop goes on."""
    beat = json.dumps({"at": time.time(), "archived": archived, "failed": failed})
    try:
        ops_redis().hset(HEARTBEATS_KEY, archiver_identity(), beat)
    except Exception as error:  # noqa: BLE001 - the heartbeat is advisory
        logger.warning("archive heartbeat not written: %s", error)


def archiver_health() -> dict:
    """For /healthz: healthy while some archiver's heartbeat is fresher than ARCHIVE_HEARTBEAT_MAX_AGE seconds.
    {"healthy", "detail", "archivers" (fresh ones), "last_heartbeat_age_seconds"}. Never raises. Heartbeats older
    than ten times the limit are forgotten (archivers gone for good)."""
    max_age = settings.ARCHIVE_HEARTBEAT_MAX_AGE
    try:
        beats = {name.decode(): json.loads(value) for name, value in ops_redis().hgetall(HEARTBEATS_KEY).items()}
    except Exception as error:  # noqa: BLE001 - a probe reports, it does not raise
        return {"healthy": False, "detail": f"heartbeats unreadable: {error}"[:300], "archivers": 0,
                "last_heartbeat_age_seconds": None}  # fmt: skip
    now = time.time()
    ages = {name: now - float(beat.get("at", 0)) for name, beat in beats.items()}
    gone = [name for name, age in ages.items() if age > 10 * max_age]
    if gone:
        try:
            ops_redis().hdel(HEARTBEATS_KEY, *gone)
        except Exception:  # noqa: BLE001, S110 - forgetting is housekeeping
            pass
    fresh = [name for name, age in ages.items() if age <= max_age]
    newest = min(ages.values()) if ages else None
    if fresh:
        detail = f"{len(fresh)} archiver(s) alive"
    elif newest is None:
        detail = "no archiver has reported"
    else:
        detail = f"last archiver heartbeat {newest:.0f}s ago (limit {max_age:.0f}s)"
    return {"healthy": bool(fresh), "detail": detail, "archivers": len(fresh),
            "last_heartbeat_age_seconds": None if newest is None else round(newest, 1)}  # fmt: skip


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
