"""Each queue is served by its own pool: a worker started with only `-Q <pool>` runs that queue's tasks,
on the Redis broker and on RabbitMQ."""

import socket

import pytest
from celery import Celery
from django.conf import settings

from emailsys.celery import app as project_app
from emailsys.testing import process_env, unique_token, wait_until, worker_argv

BROKERS = {
    "redis": lambda: settings.REDIS_URL,
    "rabbitmq": lambda: "amqp://guest:guest@127.0.0.1:5672//",
}


def client_app(broker_url: str) -> Celery:
    """A Celery client with the project's queues and routes, publishing to the given broker."""
    app = Celery("pool-test", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.broker_url = broker_url
    return app


@pytest.mark.parametrize("broker", list(BROKERS))
def test_each_queue_is_consumed_by_its_own_pool(broker: str, processes, django_db_setup) -> None:
    broker_url = BROKERS[broker]()
    app = client_app(broker_url)
    app.control.purge()
    token = unique_token()
    host = socket.gethostname()
    env = process_env(CELERY_BROKER_URL=broker_url)
    nodes = {pool: f"{pool}-{token}@{host}" for pool in settings.WORKER_POOLS}
    for pool, node in nodes.items():
        processes(f"worker-{pool}", worker_argv(pool, node_name=node), env=env)

    def all_answer() -> bool:
        replies = app.control.ping(destination=list(nodes.values()), timeout=0.5)
        return {name for reply in replies for name in reply} == set(nodes.values())

    wait_until(all_answer, timeout=60, interval=0.5, what="every pool's worker answering ping")

    results = {pool: app.send_task("emailsys.report_worker", queue=pool) for pool in settings.WORKER_POOLS}
    for pool, result in results.items():
        report = result.get(timeout=30)
        assert report["hostname"] == nodes[pool], f"{pool} task ran on {report['hostname']}"
        assert report["queue"] == pool


def test_task_names_route_to_their_pools() -> None:
    router = project_app.amqp.router
    expected = {
        "campaigns.send_step": "sending",
        "workorders.run_step": "workorders",
        "processing.ingest_message": "inbound",
        "campaigns.dispatch_due": "default",
        "emailsys.heartbeat": "default",
    }
    for task_name, queue in expected.items():
        assert router.route({}, task_name)["queue"].name == queue, task_name
