"""Fixtures shared by every app's tests: real processes with logs, cleaned up after each test."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from emailsys.testing import ManagedProcess, start_process

StartProcess = Callable[..., ManagedProcess]


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
