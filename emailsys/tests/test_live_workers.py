"""Live publishing from real Celery workers, prefork children and a threads pool: work orders run their pipeline
(each step publishing through `live_changed`) round after round, and the workers neither log "Event loop is
closed" nor a failed publish, nor keep opening Redis connections once the first rounds opened what they keep
(counted per worker, from /proc)."""

import os
from pathlib import Path

import pytest

from emailsys.metrics import LIVE_METRICS_KEY
from emailsys.models import ReceivedEvent
from emailsys.ops_clients import ops_redis
from emailsys.testing import RecordingSmtpServer, process_env, unique_token, wait_until, worker_argv
from workorders.models import WorkOrder
from workorders.services.lifecycle import workorder_start
from workorders.tests.test_acceptance_processes import contacts_create, events_of, work_order_create, worker_ready

pytestmark = pytest.mark.django_db(transaction=True)
ROUNDS = 4
RUNNING = (WorkOrder.Status.QUEUED, WorkOrder.Status.WORKING)


def redis_connections(worker) -> int:
    """TCP connections to Redis held by the worker's processes (its process group, from /proc): other processes of
    the suite on the same Redis database do not count, as they did in its CLIENT LIST."""
    port = int(ops_redis().connection_pool.connection_kwargs.get("port", 6379))
    to_redis = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:  # established, remote port
                to_redis.add(fields[9])  # the socket's inode
    count = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rpartition(")")[2].split()[2]) != worker.popen.pid:  # pgrp: started its own session
                continue
            links = [os.readlink(fd) for fd in (stat.parent / "fd").iterdir()]
        except OSError:  # the process (or the descriptor) went away meanwhile
            continue
        count += sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in to_redis)
    return count


def finished(work_order: WorkOrder) -> bool:
    """Its pipeline ran as far as it goes without an operator (complete, or waiting for an approval)."""
    status, lock_owner = WorkOrder.objects.values_list("status", "lock_owner").get(id=work_order.id)
    pending = events_of(work_order).exclude(state__in=ReceivedEvent.FINISHED).exists()
    return status not in RUNNING and not lock_owner and not pending


def published() -> int:
    return int(ops_redis().hget(LIVE_METRICS_KEY, "published") or 0)


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("pool", "concurrency"), [("prefork", 2), ("threads", 4)])
def test_publishing_from_worker_pools_leaks_no_event_loop_nor_connection(processes, tmp_path, pool, concurrency):
    contacts_create(en=3, fr=0)
    argv = worker_argv("workorders", node_name=f"live-{unique_token()}@localhost", concurrency=concurrency)
    argv[argv.index("--pool") + 1] = pool
    worker = processes("worker", argv, env=process_env(MEDIA_ROOT=str(tmp_path / "media")))
    wait_until(lambda: worker_ready(worker), timeout=60, what="worker ready")
    clients: list[int] = []
    before = published()
    with RecordingSmtpServer() as smtp:
        for _ in range(ROUNDS):
            work_orders = [work_order_create(smtp) for _ in range(concurrency)]  # one per pool slot
            for work_order in work_orders:
                workorder_start(work_order_id=work_order.id)
            for work_order in work_orders:
                wait_until(lambda w=work_order: finished(w), timeout=90, interval=0.3, what="pipeline finished")
            clients.append(redis_connections(worker))

    log = worker.log(tail=2000)
    assert "Event loop is closed" not in log and "live publish to" not in log, log
    # Each run's steps published (counted per group, by the worker's metrics thread within a second).
    wait_until(lambda: published() - before >= ROUNDS * concurrency * 4, timeout=10, what="publishes counted")
    print(f"{pool}: the worker's Redis connections after each round {clients}, {published() - before} group publishes")
    # The first round opens what the processes keep (broker, channel layer, gate); a pool thread first busy in a
    # later round may open its own (at most one per slot). A leak grows with every run: more than a slot's worth.
    assert clients[-1] <= clients[1] + concurrency, clients
