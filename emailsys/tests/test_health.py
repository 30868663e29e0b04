"""/healthz verdicts computed in-process: which component is named, and why."""

import time

import pytest

from emailsys.health import BEAT_TICK_KEY, beat_record_tick, system_health_check
from emailsys.ops_clients import ops_redis

pytestmark = pytest.mark.django_db


def test_without_workers_healthz_is_503_and_names_each_missing_pool(client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    for component in ("database", "redis", "broker"):
        assert body["components"][component]["healthy"] is True, component
    for pool in ("default", "sending", "workorders", "inbound"):
        assert body["components"][f"worker:{pool}"] == {
            "healthy": False,
            "detail": "no worker answered",
            "latency_ms": body["components"][f"worker:{pool}"]["latency_ms"],
            "extra": {"workers": []},
        }
        assert f"worker:{pool}" in body["unhealthy"]


def test_beat_is_healthy_after_a_recent_tick_and_unhealthy_when_its_tick_is_old(settings) -> None:
    beat_record_tick(at=time.time())
    beat = next(c for c in system_health_check().components if c.name == "beat")
    assert beat.healthy and beat.extra["last_tick_age_s"] < 5

    beat_record_tick(at=time.time() - settings.HEALTHZ_BEAT_MAX_AGE - 10)
    beat = next(c for c in system_health_check().components if c.name == "beat")
    assert not beat.healthy
    assert "limit" in beat.detail

    ops_redis().delete(BEAT_TICK_KEY)
    beat = next(c for c in system_health_check().components if c.name == "beat")
    assert (beat.healthy, beat.detail) == (False, "beat has never ticked")


def test_an_unreachable_database_is_named_without_a_crash(settings) -> None:
    from django.db import connections

    settings.DATABASES["default"]["PORT"] = "1"  # nothing listens there
    connections["default"].close()
    connections["default"].settings_dict["PORT"] = "1"
    try:
        health = system_health_check()
    finally:
        connections["default"].settings_dict["PORT"] = settings.DATABASES["default"]["PORT"] = "5432"
    database = next(c for c in health.components if c.name == "database")
    assert not database.healthy
    assert "OperationalError" in database.detail
    assert "database" in health.as_dict()["unhealthy"]


def test_heartbeat_periodic_task_exists_and_is_editable() -> None:
    from django_celery_beat.models import PeriodicTask

    heartbeat = PeriodicTask.objects.get(task="emailsys.heartbeat")
    assert heartbeat.enabled and heartbeat.interval.every == 10 and heartbeat.queue == "default"


def test_missing_periodic_tasks_come_back_after_migrate_but_edits_stay() -> None:
    from django.core.management import call_command
    from django_celery_beat.models import PeriodicTask

    PeriodicTask.objects.filter(name="emailsys: heartbeat").delete()
    PeriodicTask.objects.filter(name="campaigns: dispatch").update(enabled=False)
    call_command("migrate", verbosity=0)
    assert PeriodicTask.objects.get(name="emailsys: heartbeat").task == "emailsys.heartbeat"
    assert PeriodicTask.objects.get(name="campaigns: dispatch").enabled is False
