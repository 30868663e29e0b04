"""/healthz over a whole running system (daphne, one worker per pool, beat) on a Redis server this test
owns: killing Redis turns it 503 naming Redis within 5 s; restarting Redis brings it back to 200."""

import time

import pytest
import requests

from emailsys.testing import (
    beat_argv,
    daphne_argv,
    free_port,
    port_answers,
    process_env,
    redis_server_argv,
    unique_token,
    wait_until,
    worker_argv,
)

POOLS = ("default", "sending", "workorders", "inbound")


def healthz(port: int) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10)


@pytest.mark.timeout(240)
def test_healthz_follows_a_redis_outage(processes, tmp_path, django_db_setup) -> None:
    redis_port, web_port = free_port(), free_port()
    start_redis = lambda: processes("redis", redis_server_argv(redis_port, tmp_path), env=process_env())  # noqa: E731
    redis = start_redis()
    wait_until(lambda: port_answers(redis_port), timeout=10, what="redis-server listening")

    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    env = process_env(REDIS_URL=redis_url, CELERY_BROKER_URL=redis_url, CELERY_RESULT_BACKEND=redis_url)
    token = unique_token()
    processes("web", daphne_argv(web_port), env=env)
    for pool in POOLS:
        processes(f"worker-{pool}", worker_argv(pool, node_name=f"{pool}-{token}@%h", concurrency=1), env=env)
    processes("beat", beat_argv(tmp_path), env=env)

    healthy = wait_until(lambda: healthz(web_port).status_code == 200, timeout=90, interval=0.5, what="healthz 200")
    assert healthy
    body = healthz(web_port).json()
    assert body["status"] == "ok"
    assert {"database", "redis", "broker", "beat", *(f"worker:{p}" for p in POOLS)} <= set(body["components"])

    redis.kill()
    killed_at = time.monotonic()

    def names_redis() -> dict | None:
        response = healthz(web_port)
        return response.json() if response.status_code == 503 and "redis" in response.json()["unhealthy"] else None

    outage = wait_until(names_redis, timeout=5, interval=0.2, what="healthz 503 naming redis")
    seconds_to_503 = time.monotonic() - killed_at
    print(f"healthz named redis {seconds_to_503:.2f}s after the kill")
    assert seconds_to_503 <= 5
    assert outage["status"] == "unhealthy"
    assert outage["components"]["redis"]["healthy"] is False
    assert outage["components"]["database"]["healthy"] is True

    start_redis()
    restarted_at = time.monotonic()
    wait_until(lambda: healthz(web_port).status_code == 200, timeout=90, interval=0.5, what="healthz 200 again")
    print(f"healthz 200 again {time.monotonic() - restarted_at:.2f}s after the restart")
