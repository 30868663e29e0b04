"""Live latency: from a worker's commit of a work order's state change to its message at each of N WebSocket clients.

Runs in a scratch PostgreSQL database with its own redis-server (channel layer, cache) and one daphne serving
emailsys.asgi on loopback. N clients (a staff user's session) join one work order's group `workorder-<id>`; a
separate "worker" process then makes U changes, each as the services do: in one transaction an UPDATE of the work
order and `live_changed` (its version incremented by PostgreSQL), published after COMMIT. The worker notes
time.time() right after each COMMIT (an on_commit callback registered before live_changed's), keyed by the
version; each client notes when the message of that version arrived. Latency = arrival - commit, per client and
update.

    .venv/bin/python bench/live_latency.py [--clients 50] [--updates 1000] [--rate 50]
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.support.environment import bench_environment, redis_start, scratch_database  # noqa: E402

# The worker: U changes at `rate` per second; prints "<version> <commit time>" per change.
WORKER = """
import sys, time
import django
django.setup()
from django.db import transaction
from django.utils import timezone
from emailsys.live import live_changed
from workorders.models import WorkOrder

work_order_id, updates, rate = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
committed = []
started = time.monotonic()
for n in range(updates):
    with transaction.atomic():
        WorkOrder.objects.filter(id=work_order_id).update(resume_at=timezone.now())
        transaction.on_commit(lambda: committed.append(time.time()))  # runs first after COMMIT
        live_changed("workorder", work_order_id)
    delay = started + (n + 1) / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)  # the pace of the changes
versions = WorkOrder.objects.values_list("live_version", flat=True).get(id=work_order_id)
for index, at in enumerate(committed):
    print(versions - len(committed) + 1 + index, repr(at))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50, help="WebSocket clients on the work order's group")
    parser.add_argument("--updates", type=int, default=1000, help="state changes the worker commits")
    parser.add_argument("--rate", type=float, default=50.0, help="changes per second")
    options = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-live-"))
    try:
        with scratch_database() as (_, database_url):
            run(options, scratch, database_url)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run(options, scratch: Path, database_url: str) -> None:
    from emailsys.testing import daphne_argv, free_port, port_answers, start_process, wait_until

    redis_port = free_port()
    bench_environment(database_url, f"redis://127.0.0.1:{redis_port}/0")
    os.environ["ALLOWED_HOSTS"] = "127.0.0.1"  # the clients' Origin, checked by daphne's origin validator
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from workorders.tests.factories import WorkOrderFactory

    redis = redis_start(redis_port, scratch)
    port = free_port()
    daphne = start_process("daphne", daphne_argv(port), env=dict(os.environ), log_dir=scratch)
    try:
        wait_until(lambda: port_answers(port) or not daphne.alive, timeout=30, what="daphne listening")
        user = get_user_model().objects.create_superuser("bench", password="x")  # noqa: S106
        client = Client()
        client.force_login(user)
        cookie = f"sessionid={client.cookies['sessionid'].value}"
        work_order = WorkOrderFactory()
        connection.close()
        load_before = os.getloadavg()[0]
        commits, arrivals = asyncio.run(measure(options, port, cookie, work_order.id))
        load_after = os.getloadavg()[0]
    finally:
        daphne.stop()
        redis.stop()
        connection.close()

    latencies = [(at - commits[version]) * 1000 for received in arrivals for version, at in received.items()
                 if version in commits]  # fmt: skip
    expected = options.clients * len(commits)
    print(f"\n{options.clients} clients × {len(commits)} updates at {options.rate:g}/s, one daphne, DEBUG off; "
          f"load average before/after: {load_before:.1f}/{load_after:.1f} on {os.cpu_count()} cores")  # fmt: skip
    print("\n| messages | missing | p50 ms | p95 ms | p99 ms | max ms |\n|---:|---:|---:|---:|---:|---:|")
    q = statistics.quantiles(latencies, n=100)
    print(f"| {len(latencies)} | {expected - len(latencies)} | {q[49]:.1f} | {q[94]:.1f} | {q[98]:.1f} | "
          f"{max(latencies):.1f} |")  # fmt: skip


async def measure(options, port: int, cookie: str, work_order_id: int) -> tuple[dict[int, float], list[dict]]:
    import websockets

    group = f"workorder-{work_order_id}"
    headers = {"Origin": f"http://127.0.0.1:{port}", "Cookie": cookie}
    sockets = [await websockets.connect(f"ws://127.0.0.1:{port}/ws/live/{group}/", additional_headers=headers,
                                        max_size=None) for _ in range(options.clients)]  # fmt: skip
    arrivals: list[dict[int, float]] = [{} for _ in sockets]

    async def listen(socket, received: dict[int, float]) -> None:
        async for raw in socket:
            at = time.time()
            message = json.loads(raw)
            if message["type"] == "update":
                received[message["payload"]["version"]] = at

    listeners = [
        asyncio.create_task(listen(socket, received)) for socket, received in zip(sockets, arrivals, strict=True)
    ]
    await until(lambda: all(0 in received for received in arrivals), timeout=30)  # each one's snapshot on connecting
    argv = [sys.executable, "-c", WORKER, str(work_order_id), str(options.updates), str(options.rate)]
    worker = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent)
    output, _ = await worker.communicate()
    commits = {int(v): float(at) for v, at in (line.split() for line in output.decode().splitlines())}
    last_version = max(commits)
    await until(lambda: all(last_version in received for received in arrivals), timeout=30)
    for listener in listeners:
        listener.cancel()
    for socket in sockets:
        await socket.close()
    return commits, arrivals


async def until(predicate, *, timeout: float) -> None:
    """Polls `predicate` until true or `timeout` s have passed (then the table shows what is missing)."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


if __name__ == "__main__":
    main()
