"""Periodic tasks are declared once (emailsys/periodic.py) and ensured after migrate and flush; rows an operator
edited in the admin keep the edit."""

import re

import pytest
from django.conf import settings
from django.core.management import call_command
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from emailsys.celery import app as project_app
from emailsys.periodic import PERIODIC_TASKS, periodic_tasks_ensure

pytestmark = pytest.mark.django_db

EXPECTED = {
    "emailsys: heartbeat": ("emailsys.heartbeat", "HEARTBEAT_INTERVAL", 10, "default"),
    "emailsys: sweep events": ("emailsys.sweep_events", "EVENT_SWEEP_INTERVAL", 5, "default"),
    "campaigns: dispatch": ("campaigns.dispatch_due", "CAMPAIGN_DISPATCH_INTERVAL", 5, "default"),
    "workorders: sweep": ("workorders.sweep", "WORKORDER_SWEEP_INTERVAL", 5, "workorders"),
    "emailsys: dashboard refresh": ("emailsys.dashboard_refresh", "DASHBOARD_REFRESH_INTERVAL", 3, "default"),
    "processing: fallback sync": (
        "processing.fallback_sync",
        "INBOUND_FALLBACK_SYNC_INTERVAL",
        120,
        "inbound_backfill",
    ),
    "processing: IMAP poll": ("processing.imap_poll_all", "IMAP_POLL_INTERVAL", 60, "inbound_backfill"),
}


def test_the_declaration_keeps_the_names_tasks_and_queues_existing_installations_have() -> None:
    declared = {spec.name: (spec.task, spec.interval_setting, spec.queue) for spec in PERIODIC_TASKS}
    assert declared == {name: (task, setting, queue) for name, (task, setting, _, queue) in EXPECTED.items()}


def test_the_interval_settings_default_to_the_intervals_the_migrations_used() -> None:
    assert {name: getattr(settings, setting) for name, (_, setting, _, _) in EXPECTED.items()} == {
        name: default for name, (_, _, default, _) in EXPECTED.items()
    }


def test_each_declared_task_exists_and_its_queue_is_its_route() -> None:
    project_app.loader.import_default_modules()
    router = project_app.amqp.router
    for spec in PERIODIC_TASKS:
        assert spec.task in project_app.tasks, spec.task
        assert router.route({}, spec.task)["queue"].name == spec.queue, spec.task


def test_after_migrate_every_periodic_task_exists_with_its_configured_interval_and_queue() -> None:
    call_command("migrate", verbosity=0)
    for spec in PERIODIC_TASKS:
        row = PeriodicTask.objects.get(name=spec.name)
        assert (row.task, row.queue, row.enabled) == (spec.task, spec.queue, True), spec.name
        assert (row.interval.every, row.interval.period) == (spec.interval_seconds(), IntervalSchedule.SECONDS)
        assert row.description == spec.description


def test_an_operators_edit_survives_a_second_ensure_and_a_migrate() -> None:
    every_minute = IntervalSchedule.objects.create(every=60, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.filter(name="workorders: sweep").update(interval=every_minute, enabled=False)
    assert periodic_tasks_ensure() == []
    call_command("migrate", verbosity=0)
    row = PeriodicTask.objects.get(name="workorders: sweep")
    assert (row.interval_id, row.enabled) == (every_minute.id, False)


def test_a_deleted_periodic_task_is_created_again() -> None:
    PeriodicTask.objects.filter(name="workorders: sweep").delete()
    assert periodic_tasks_ensure() == ["workorders: sweep"]
    assert PeriodicTask.objects.get(name="workorders: sweep").task == "workorders.sweep"
    assert PeriodicTask.objects.filter(name="workorders: sweep").count() == 1


def test_a_changed_setting_gives_a_newly_created_task_its_interval_and_leaves_existing_ones(settings) -> None:
    settings.WORKORDER_SWEEP_INTERVAL = 17
    settings.HEARTBEAT_INTERVAL = 23
    PeriodicTask.objects.filter(name="workorders: sweep").delete()
    periodic_tasks_ensure()
    assert PeriodicTask.objects.get(name="workorders: sweep").interval.every == 17
    assert PeriodicTask.objects.get(name="emailsys: heartbeat").interval.every == 10


def test_duplicate_interval_schedules_an_operator_made_do_not_break_the_ensure(settings) -> None:
    settings.WORKORDER_SWEEP_INTERVAL = 41
    first = IntervalSchedule.objects.create(every=41, period=IntervalSchedule.SECONDS)
    IntervalSchedule.objects.create(every=41, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.filter(name="workorders: sweep").delete()
    periodic_tasks_ensure()
    assert PeriodicTask.objects.get(name="workorders: sweep").interval_id == first.id


@pytest.mark.django_db(transaction=True)
def test_after_a_flush_every_periodic_task_exists_again() -> None:
    call_command("flush", interactive=False, verbosity=0)
    assert set(PeriodicTask.objects.values_list("name", flat=True)) >= {spec.name for spec in PERIODIC_TASKS}


def test_the_readme_table_lists_the_declared_periodic_tasks() -> None:
    readme = (settings.BASE_DIR / "README.md").read_text()
    rows = set(re.findall(r"^\| \*(.+?)\* \| `(.+?)` \| `([A-Z_]+)` \| (\d+) s \| `(\w+)` \|$", readme, re.MULTILINE))
    assert rows == {(s.name, s.task, s.interval_setting, str(s.interval_seconds()), s.queue) for s in PERIODIC_TASKS}
