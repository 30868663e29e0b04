"""Task round trip per worker pool, and the cost of one /healthz verdict.

Starts its own redis-server (so it never touches a running demo) and one worker per pool, shaped as in the
Procfile, then per pool: the latency of one task at a time (publish → result) and the throughput of a
burst of tasks. Prints a table.

    .venv/bin/python bench/task_roundtrip.py [--burst 500] [--samples 50]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.support.environment import redis_start  # noqa: E402 - after the repository root is on sys.path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailsys.settings.local")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=500, help="tasks published at once per pool")
    parser.add_argument("--samples", type=int, default=50, help="sequential round trips per pool")
    options = parser.parse_args()

    from emailsys.testing import free_port, start_process, wait_until

    scratch = Path(tempfile.mkdtemp(prefix="bench-"))
    redis_port = free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    os.environ.update(REDIS_URL=redis_url, CELERY_BROKER_URL=redis_url, CELERY_RESULT_BACKEND=redis_url)

    import django

    django.setup()
    from django.conf import settings

    from emailsys.celery import app
    from emailsys.health import system_health_check
    from emailsys.testing import process_env, unique_token, worker_argv

    processes = [redis_start(redis_port, scratch)]
    try:
        env = process_env(DJANGO_SETTINGS_MODULE="emailsys.settings.local", DATABASE_URL=os.environ.get(
            "DATABASE_URL", "postgres://postgres@127.0.0.1:5432/emailsys"))  # fmt: skip
        token = unique_token()
        nodes = {pool: f"{pool}-{token}@bench" for pool in settings.WORKER_POOLS}
        for pool, node in nodes.items():
            concurrency = 20 if pool == "sending" else 2
            argv = worker_argv(pool, node_name=node, concurrency=concurrency)
            processes.append(start_process(f"worker-{pool}", argv, env=env, log_dir=scratch))
        wait_until(
            lambda: len(app.control.ping(destination=list(nodes.values()), timeout=0.5)) == len(nodes),
            timeout=60,
            what="workers answering",
        )

        rows = []
        for pool in settings.WORKER_POOLS:
            latencies = []
            for _ in range(options.samples):
                started = time.perf_counter()
                app.send_task("emailsys.report_worker", queue=pool).get(timeout=30)
                latencies.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            results = [app.send_task("emailsys.report_worker", queue=pool) for _ in range(options.burst)]
            for result in results:
                result.get(timeout=120)
            elapsed = time.perf_counter() - started
            latencies.sort()
            rows.append(
                (
                    pool,
                    statistics.median(latencies),
                    latencies[int(len(latencies) * 0.95) - 1],
                    options.burst / elapsed,
                )
            )

        health_ms = []
        for _ in range(10):
            started = time.perf_counter()
            system_health_check()
            health_ms.append((time.perf_counter() - started) * 1000)

        print(
            f"\nTask round trip, one worker per pool, Redis broker ({options.samples} samples, burst {options.burst})"
        )
        print(f"{'pool':<12} {'p50 ms':>8} {'p95 ms':>8} {'burst tasks/s':>14}")
        for pool, p50, p95, rate in rows:
            print(f"{pool:<12} {p50:>8.1f} {p95:>8.1f} {rate:>14.0f}")
        print(f"\n/healthz verdict (all probes, workers answering): median {statistics.median(health_ms):.0f} ms")
    finally:
        for process in reversed(processes):
            process.stop()


if __name__ == "__main__":
    main()
