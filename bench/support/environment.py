"""What every bench script runs in: a scratch PostgreSQL database, its own redis-server and the settings that
every process it starts inherits. Everything stays on loopback."""

import os
import secrets
import subprocess
import sys
from contextlib import closing, contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

BASE_DIR = Path(__file__).resolve().parents[2]
POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


@contextmanager
def scratch_database():
    """A new database migrated with `manage.py migrate`, dropped (connections and all) however we leave."""
    name = f"emailsys_bench_{secrets.token_hex(4)}"
    url = f"postgres://{POSTGRES['user']}@{POSTGRES['host']}:{POSTGRES['port']}/{name}"
    admin = postgres_connect()
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            env = {**os.environ, "DJANGO_SETTINGS_MODULE": "emailsys.settings.local", "DATABASE_URL": url}
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=BASE_DIR, env=env, check=True
            )
            yield name, url
        finally:
            with admin.cursor() as cursor:
                cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        admin.close()


def postgres_connect(dbname: str = "postgres"):
    connection = psycopg.connect(dbname=dbname, **POSTGRES)
    connection.autocommit = True
    return connection


def bench_environment(database_url: str, redis_url: str) -> None:
    """This process's settings, inherited by every process it starts: production-like (DEBUG off, so Django
    does not keep every query), the scratch database and the bench's own Redis."""
    from cryptography.fernet import Fernet

    os.environ.update(
        DJANGO_SETTINGS_MODULE="emailsys.settings.local",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        CELERY_BROKER_URL=redis_url,
        CELERY_RESULT_BACKEND=redis_url,
        CHANNELS_PREFIX=f"bench-{secrets.token_hex(4)}",
    )


def redis_start(port: int, scratch: Path):
    """The bench's own redis-server on `port` (its files in `scratch`), once it answers; the caller stops it."""
    from emailsys.testing import port_answers, redis_server_argv, start_process, wait_until

    redis = start_process("redis", redis_server_argv(port, scratch), env=dict(os.environ), log_dir=scratch)
    try:
        wait_until(lambda: port_answers(port), timeout=10, what="redis-server")
    except BaseException:
        redis.stop()
        raise
    return redis


def connections_free() -> tuple[int, int]:
    """(backends this server can still accept from ordinary users, max_connections)."""
    with closing(postgres_connect()) as database, database.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int,"
            " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        )
        maximum, reserved, used = cursor.fetchone()
    return maximum - reserved - used, maximum
