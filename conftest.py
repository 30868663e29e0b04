"""Fixtures shared by every app's tests: real processes with logs, cleaned up after each test."""

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from emailsys.testing import ManagedProcess, free_port, moto_server_argv, port_answers, start_process, wait_until

StartProcess = Callable[..., ManagedProcess]


@pytest.fixture(autouse=True)
def live_marks_discarded() -> Iterator[None]:
    """After each test, this process's coalescer reads nothing more: its pending marks would read snapshots while
    the test database is flushed (a deadlock, or errors of tables gone)."""
    yield
    from emailsys.live import live_discard

    live_discard()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[StartProcess]:
    """Starts project processes (`start(name, argv, env=...)`); stops them all afterwards and prints their
    log tails, which pytest shows when the test failed."""
    started: list[ManagedProcess] = []

    def start(name: str, argv: list[str], *, env: dict[str, str]) -> ManagedProcess:
        process = start_process(name, argv, env=env, log_dir=tmp_path / "logs")
        started.append(process)
        return process

    start.started = started  # type: ignore[attr-defined] - lets a test stop everything mid-way
    yield start
    for process in reversed(started):
        process.stop()
    for process in started:
        print(f"\n===== {process.name} (exit {process.popen.returncode}) =====\n{process.log()}")


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server (HTTP, SQS and friends) for this test session or xdist worker; its URL. Tests keep apart by
    creating queues with their own names."""
    port = free_port()
    log_dir = tmp_path_factory.mktemp("moto")
    process = start_process("moto", moto_server_argv(port), env=dict(os.environ), log_dir=log_dir)
    try:
        wait_until(lambda: port_answers(port) or not process.alive, timeout=30, what="moto_server listening")
        assert process.alive, f"moto_server exited:\n{process.log()}"
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


@pytest.fixture(scope="session")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """collectstatic into a directory of this test session, for daphne serving pages to a browser."""
    from emailsys.testing_browser import collectstatic_into

    return collectstatic_into(tmp_path_factory.mktemp("static"))


@pytest.fixture(scope="session", autouse=True)
def database_sessions_drained(django_db_setup, django_db_blocker) -> Iterator[None]:
    """Before the test database is dropped: PostgreSQL has ended the sessions of the processes the tests stopped
    (a web process's pooled connections end with the process, but their backends notice a moment later)."""
    yield
    from django.db import connection

    def others() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return cursor.fetchone()[0]

    with django_db_blocker.unblock():
        try:
            wait_until(lambda: others() == 0, timeout=5, what="the stopped processes' database sessions to end")
        except TimeoutError:
            pass  # pytest-django says which sessions are left, when it cannot drop the database
        finally:
            connection.close()


@pytest.fixture(scope="session")
def imap_server(tmp_path_factory: pytest.TempPathFactory):
    """A private Dovecot on loopback for this test session or xdist worker (emailsys/testing_imap.py): .host .port
    .add_user(name, password) .deliver(user, raw) .set_uidvalidity(user, folder, value). Tests keep apart by user."""
    from emailsys.testing_imap import dovecot_server_fixture

    yield from dovecot_server_fixture(tmp_path_factory.mktemp("dovecot"))


@pytest.fixture
def imap_user(imap_server) -> tuple[str, str]:
    """A new user of `imap_server` for this test: (name, password)."""
    from emailsys.testing import unique_token

    name, password = f"user-{unique_token()}", f"pw-{unique_token()}"
    imap_server.add_user(name, password)
    return name, password
