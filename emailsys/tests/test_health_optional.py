"""/healthz names the optional components a deployment has: the archiver (ARCHIVE_ENABLED) and the SQS bridge (a
queue named), healthy while their loops write heartbeats, unhealthy with the reason when none has or the last one is
too old; absent otherwise."""

import json
import time

import pytest

from archive.services.health import HEARTBEATS_KEY, archiver_heartbeat_write
from emailsys.ops_clients import ops_redis

pytestmark = pytest.mark.django_db


def healthz(client) -> dict:
    response = client.get("/healthz")
    assert response.status_code in (200, 503)  # no workers run here: the verdict as a whole is 503
    return response.json()


def archiver_component(client) -> dict | None:
    return healthz(client)["components"].get("archiver")


def test_healthz_reports_the_archiver_only_when_it_is_enabled(client, settings) -> None:
    ops_redis().delete(HEARTBEATS_KEY)
    assert settings.ARCHIVE_ENABLED is False
    assert archiver_component(client) is None

    settings.ARCHIVE_ENABLED = True  # as make demo and a deployment with an archive queue set it
    missing = archiver_component(client)
    assert (missing["healthy"], missing["detail"]) == (False, "no archiver has reported")

    archiver_heartbeat_write(archived=3, failed=0)  # what the archiver's loop writes each round
    alive = archiver_component(client)
    assert (alive["healthy"], alive["detail"], alive["extra"]["archivers"]) == (True, "1 archiver(s) alive", 1)

    stale = json.dumps({"at": time.time() - settings.ARCHIVE_HEARTBEAT_MAX_AGE - 5, "archived": 3, "failed": 0})
    ops_redis().delete(HEARTBEATS_KEY)
    ops_redis().hset(HEARTBEATS_KEY, "gone-host:1", stale)
    body = healthz(client)
    silent = body["components"]["archiver"]
    limit = f"(limit {settings.ARCHIVE_HEARTBEAT_MAX_AGE:.0f}s)"
    assert silent["healthy"] is False and silent["detail"].endswith(limit), silent
    assert "archiver" in body["unhealthy"]
    ops_redis().delete(HEARTBEATS_KEY)


def test_healthz_reports_the_sqs_bridge_only_when_sqs_is_configured(client, settings) -> None:
    from emailsys.health import process_heartbeat_record, process_heartbeats_key

    ops_redis().delete(process_heartbeats_key("sqs-bridge"))
    settings.SQS_QUEUE_URL, settings.SQS_QUEUE_NAME = "", ""
    assert "sqs-bridge" not in healthz(client)["components"]  # events go straight to Celery: no bridge to run

    settings.SQS_QUEUE_NAME = "emailsys-events.fifo"
    body = healthz(client)
    assert body["components"]["sqs-bridge"]["detail"] == "no sqs-bridge has reported"
    assert "sqs-bridge" in body["unhealthy"]

    process_heartbeat_record(role="sqs-bridge")  # what the bridge's loop writes each long poll
    bridge = healthz(client)["components"]["sqs-bridge"]
    assert (bridge["healthy"], bridge["detail"]) == (True, "1 sqs-bridge(s) alive")
    ops_redis().delete(process_heartbeats_key("sqs-bridge"))
