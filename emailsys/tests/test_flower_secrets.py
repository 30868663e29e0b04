"""Flower, as the Procfile runs it, against a real worker: its pages show the broker and the workers but no secret.
Redis here gets a real password (`requirepass`), so the URLs every process uses carry one worth masking."""

import secrets
import uuid

import pytest
import requests
from cryptography.fernet import Fernet

from emailsys.testing import (
    flower_argv,
    free_port,
    port_answers,
    process_env,
    redis_server_argv,
    subprocess_database_url,
    wait_until,
    worker_argv,
)

pytestmark = pytest.mark.django_db


def test_flower_pages_show_no_secret(processes, tmp_path, settings) -> None:
    redis_password = f"redis-pw-{secrets.token_hex(8)}"
    database_password = f"db-pw-{secrets.token_hex(8)}"  # PostgreSQL here trusts loopback: accepted, unused
    flower_password = f"flower-pw-{secrets.token_hex(8)}"
    secret_key = f"secret-key-{secrets.token_hex(24)}"
    metrics_token = f"metrics-token-{secrets.token_hex(8)}"
    aws_secret = f"aws-secret-{secrets.token_hex(8)}"
    field_key = Fernet.generate_key().decode()

    redis_port = free_port()
    redis_argv = [*redis_server_argv(redis_port, tmp_path), "--requirepass", redis_password]
    processes("redis", redis_argv, env=process_env())
    wait_until(lambda: port_answers(redis_port), timeout=15, what="redis listening")
    redis_url = f"redis://:{redis_password}@127.0.0.1:{redis_port}/0"
    database_url = subprocess_database_url().replace("postgres@", f"postgres:{database_password}@", 1)
    env = process_env(
        REDIS_URL=redis_url,
        CELERY_BROKER_URL=redis_url,
        CELERY_RESULT_BACKEND=redis_url,
        DATABASE_URL=database_url,
        SECRET_KEY=secret_key,
        METRICS_BEARER_TOKEN=metrics_token,
        AWS_SECRET_ACCESS_KEY=aws_secret,
        FIELD_ENCRYPTION_KEYS=field_key,
    )
    node = f"flowertest-{uuid.uuid4().hex[:8]}@localhost"
    processes("worker", worker_argv("default", node_name=node, concurrency=1), env=env)
    flower_port = free_port()
    flower = processes("flower", flower_argv(flower_port, basic_auth=f"admin:{flower_password}"), env=env)
    wait_until(lambda: port_answers(flower_port), timeout=30, what="flower listening")

    base = f"http://127.0.0.1:{flower_port}"
    auth = ("admin", flower_password)
    assert requests.get(f"{base}/workers", timeout=10).status_code == 401  # basic auth holds

    def fetch(path: str) -> str:
        response = requests.get(f"{base}{path}", auth=auth, timeout=30)
        assert response.status_code == 200, (path, response.status_code)
        return response.text

    wait_until(lambda: node in fetch("/api/workers?refresh=1"), timeout=60, what="flower sees the worker")
    pages = {path: fetch(path) for path in ["/", "/workers", f"/worker/{node}", "/broker", "/tasks", "/api/workers"]}
    assert flower.alive

    # The pages are the real ones: the worker answered Flower's inspections (its stats, and no settings for its
    # Config tab), and the broker page shows the broker URL with the password masked.
    worker = requests.get(f"{base}/api/workers", auth=auth, timeout=30).json()[node]
    assert worker["stats"]["pool"]["max-concurrency"] == 1
    assert list(worker["conf"]) == ["settings"] and "not published" in worker["conf"]["settings"]
    assert node in pages[f"/worker/{node}"]
    assert f"redis://:**@127.0.0.1:{redis_port}/0" in pages["/broker"]
    known_secrets = {
        "Redis password": redis_password,
        "database password": database_password,
        "SECRET_KEY": secret_key,
        "FIELD_ENCRYPTION_KEYS (this run's)": field_key,
        "FIELD_ENCRYPTION_KEYS (test settings')": settings.FIELD_ENCRYPTION_KEYS[0],
        "METRICS_BEARER_TOKEN": metrics_token,
        "AWS_SECRET_ACCESS_KEY": aws_secret,
        "Flower's password": flower_password,
    }
    leaks = [(what, path) for path, body in pages.items() for what, value in known_secrets.items() if value in body]
    assert leaks == []
