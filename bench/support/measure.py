"""CPU and connections, read so that they do not depend on what else this machine is running: CPU seconds
from /proc and getrusage, backends of the scratch database from pg_stat_activity."""

import os
import resource
import threading
from contextlib import closing
from pathlib import Path

from bench.support.environment import postgres_connect


class DatabaseSampler(threading.Thread):
    """Every 0.5 s, from the maintenance database: how many backends the scratch database has (the most seen),
    and the CPU its backends used since the sampler started (read from /proc, so other databases' load on this
    machine does not count). A backend that ends between two samples loses at most 0.5 s of its CPU."""

    def __init__(self, dbname: str) -> None:
        super().__init__(daemon=True)
        self.dbname, self.maximum, self._stop_event = dbname, 0, threading.Event()
        self.baseline: dict[int, float] = {}
        self.latest: dict[int, float] = {}
        self._started = threading.Event()

    def run(self) -> None:
        with closing(postgres_connect()) as database, database.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            own = cursor.fetchone()[0]
            while not self._stop_event.is_set():
                self._sample(cursor, own)
                self._started.set()
                self._stop_event.wait(0.5)
            self._sample(cursor, own)

    def _sample(self, cursor, own: int) -> None:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> %s", [self.dbname, own])
        pids = [row[0] for row in cursor.fetchall()]
        self.maximum = max(self.maximum, len(pids) + 1)  # + the benchmark's own connection, as before
        for pid in pids:
            cpu = pid_cpu_seconds(pid)
            if cpu is None:
                continue
            if not self._started.is_set():
                self.baseline[pid] = cpu
            self.latest[pid] = cpu

    def start(self) -> None:
        super().start()
        self._started.wait(10)

    def stop(self) -> tuple[int, float]:
        """(most backends, CPU seconds of the scratch database's backends while sampling)."""
        self._stop_event.set()
        self.join()
        return self.maximum, sum(cpu - self.baseline.get(pid, 0.0) for pid, cpu in self.latest.items())


def pid_cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_groups_cpu_seconds(groups: set[int]) -> float:
    """CPU used so far by every live process in these process groups (our workers and their pool children);
    CPU seconds, unlike wall time, do not depend on what else this machine is running."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[2]) in groups:  # pgrp; utime and stime follow at 11 and 12
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
