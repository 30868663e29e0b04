"""Logs as the processes ship them: a real Celery worker keeps periodic tasks' received/succeeded lines out of
INFO (other tasks keep theirs), and with LOG_FORMAT=json every line it writes is one JSON object."""

import json
import logging
import socket

import pytest

from emailsys.health import HEARTBEAT_KEY
from emailsys.logs import PeriodicChatterFilter
from emailsys.ops_clients import ops_redis
from emailsys.tasks import heartbeat, report_worker
from emailsys.testing import process_env, unique_token, wait_until, worker_argv

pytestmark = pytest.mark.django_db


def run_tasks_on_a_worker(processes, **env: str):
    """A default-pool worker as the Procfile starts it runs the heartbeat (periodic) and report_worker (not)."""
    ops_redis().delete(HEARTBEAT_KEY)
    node = f"logs-{unique_token()}@{socket.gethostname()}"
    worker = processes(f"worker-{unique_token()}", worker_argv("default", node_name=node), env=process_env(**env))
    heartbeat.apply_async(queue="default")
    assert report_worker.apply_async(queue="default").get(timeout=30)["hostname"] == node
    wait_until(lambda: ops_redis().get(HEARTBEAT_KEY), timeout=10, what="the heartbeat ran")
    wait_until(lambda: "emailsys.report_worker" in worker.log(400) and "succeeded" in worker.log(400), timeout=10,
               what="the worker logged report_worker")  # fmt: skip
    return worker


@pytest.mark.timeout(60)
def test_a_worker_keeps_periodic_task_chatter_out_of_info_and_logs_other_tasks(processes) -> None:
    log = run_tasks_on_a_worker(processes).log(400)
    assert "Task emailsys.report_worker[" in log and "] received" in log
    assert "emailsys.heartbeat[" not in log, "the periodic task's received/succeeded lines are INFO"


@pytest.mark.timeout(60)
def test_log_format_json_gives_one_json_object_per_line(processes) -> None:
    log = run_tasks_on_a_worker(processes, LOG_FORMAT="json").log(400)
    records = [json.loads(line) for line in log.splitlines() if line.strip()]  # fails on any line not JSON
    assert all({"time", "level", "logger", "message"} <= set(record) for record in records)
    messages = [record["message"] for record in records]
    assert any(m.startswith("Task emailsys.report_worker[") and " succeeded in " in m for m in messages), messages
    assert any(m.startswith("worker logs-") and "starting, queues" in m for m in messages)
    assert not any("emailsys.heartbeat[" in m for m in messages)


def beat_record(task: str) -> logging.LogRecord:
    return logging.LogRecord("celery.beat", logging.INFO, __file__, 1, "Scheduler: Sending due task %s (%s)",
                             (f"spec of {task}", task), None)  # fmt: skip


def test_beat_sending_a_periodic_task_is_debug_and_any_other_stays_info() -> None:
    chatter = beat_record("campaigns.dispatch_due")
    assert PeriodicChatterFilter().filter(chatter) is False  # celery.beat logs at INFO: the DEBUG record is dropped
    assert chatter.levelname == "DEBUG"
    other = beat_record("tests.operator_made_task")
    assert PeriodicChatterFilter().filter(other) is True and other.levelname == "INFO"
