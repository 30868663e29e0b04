"""Tests: real PostgreSQL, Redis and RabbitMQ; each pytest-xdist worker gets its own Redis database."""

import os

_xdist_index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
# Set only while base.py reads it: the xdist controller's environment is inherited by its workers, and each
# worker must pick its own database.
_own_redis_url = "REDIS_URL" not in os.environ
if _own_redis_url:
    os.environ["REDIS_URL"] = f"redis://127.0.0.1:6379/{8 + _xdist_index % 8}"
os.environ.setdefault("SECRET_KEY", "test-secret-key-only-for-the-test-suite-0123456789-abcdefghijklmnop")
os.environ.setdefault("ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")
# Local ESP stand-ins (moto server, recording HTTP servers) listen on loopback at a random port.
os.environ.setdefault("ESP_ENDPOINT_ALLOWLIST", "http://127.0.0.1,http://localhost")
os.environ.setdefault("INBOUND_SIMULATOR_ENABLED", "true")

from .base import *  # noqa: E402,F403

if _own_redis_url:
    del os.environ["REDIS_URL"]

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
FIELD_ENCRYPTION_KEYS = ["dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktdGVzdDE="]
# A stream whose handler records when each event ran (emailsys/tests/eventbus_handlers.py), for the bus's tests.
EVENT_HANDLERS = {
    **EVENT_HANDLERS,  # noqa: F405
    "bustest": {"handler": "emailsys.tests.eventbus_handlers.record_run", "queue": "workorders"},
}
