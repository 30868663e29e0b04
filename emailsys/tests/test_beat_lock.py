"""Two real `celery beat` processes share one database: only the lock holder ticks, and a standby takes over when the
holder is killed -9. Ticks are counted as the messages beat published, read from the broker's queue."""

import json
import signal
import time
from datetime import datetime

import pytest
import redis
from django.conf import settings
from django.db import connection
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from emailsys.beat_lock import BeatLock, beat_lock_holder
from emailsys.health import system_health_check
from emailsys.testing import beat_argv, process_env, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

TICK_TASK = "beatlocktest.tick"  # no worker runs it: its messages stay in the queue, where the test counts them
TICK_SECONDS = 1
EXPIRE_SECONDS = 600  # Celery stamps `expires` = publish time + this: the header tells when beat sent each tick


def published_ticks(broker: redis.Redis) -> list[tuple[float, int]]:
    """(publish time, beat's pid) of each tick message waiting in the `default` queue, oldest first."""
    ticks = []
    for raw in broker.lrange("default", 0, -1):
        headers = json.loads(raw)["headers"]
        if headers["task"] != TICK_TASK:
            continue
        sent = datetime.fromisoformat(headers["expires"]).timestamp() - EXPIRE_SECONDS
        ticks.append((sent, int(headers["origin"].removeprefix("gen").partition("@")[0])))
    return sorted(ticks)


def holder_pid() -> int | None:
    holder = beat_lock_holder()
    return None if holder is None else int(holder["name"].rpartition(" pid ")[2])


@pytest.mark.timeout(120)
def test_only_the_lock_holder_ticks_and_a_standby_takes_over_after_kill_9(processes, tmp_path) -> None:
    assert settings.CELERY_BROKER_URL.startswith("redis://"), "the test reads the queue from Redis"
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("default")
    PeriodicTask.objects.update(enabled=False)  # only the test's task ticks
    every = IntervalSchedule.objects.get_or_create(every=TICK_SECONDS, period=IntervalSchedule.SECONDS)[0]
    PeriodicTask.objects.create(
        name="beat lock test", task=TICK_TASK, interval=every, queue="default", expire_seconds=EXPIRE_SECONDS
    )
    env = process_env()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        first = processes("beat-a", beat_argv(tmp_path / "a"), env=env)
        wait_until(lambda: holder_pid() == first.popen.pid, timeout=30, interval=0.1, what="beat A holding the lock")
        second = processes("beat-b", beat_argv(tmp_path / "b"), env=env)
        wait_until(lambda: "stands by" in second.log(), timeout=30, interval=0.1, what="beat B standing by")
        both_since = time.time()
        wait_until(
            lambda: len([t for t in published_ticks(broker) if t[0] > both_since]) >= 3,
            timeout=20,
            interval=0.1,
            what="3 ticks while both beats run",
        )
        first.kill()
        killed_at = time.time()
        wait_until(lambda: holder_pid() == second.popen.pid, timeout=10, interval=0.05, what="beat B taking the lock")
        acquired_after = time.time() - killed_at
        wait_until(
            lambda: len([t for t in published_ticks(broker) if t[1] == second.popen.pid]) >= 3,
            timeout=20,
            interval=0.1,
            what="3 ticks from beat B",
        )
        beat = next(c for c in system_health_check().components if c.name == "beat")
        assert beat.healthy, beat
        assert beat.extra["lock_holder"]["name"].endswith(f" pid {second.popen.pid}"), beat.extra

        second.signal_group(signal.SIGTERM)  # a graceful stop hands the lock over at once
        wait_until(lambda: holder_pid() is None, timeout=10, interval=0.05, what="beat B releasing the lock")
        ticks = published_ticks(broker)
    finally:
        broker.delete("default")

    senders = [pid for _, pid in ticks]
    assert set(senders) <= {first.popen.pid, second.popen.pid}
    before_kill = [sent for sent, pid in ticks if sent < killed_at]
    assert {pid for sent, pid in ticks if sent < killed_at} == {first.popen.pid}, "only A ticked while it lived"
    b_ticks = [sent for sent, pid in ticks if pid == second.popen.pid]
    assert min(b_ticks) >= killed_at, "the standby sent nothing before the holder died"
    times = [sent for sent, _ in ticks]
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert min(gaps) > TICK_SECONDS / 2, f"two ticks {min(gaps):.2f}s apart: ticked twice"
    takeover = min(b_ticks) - killed_at
    print(
        f"\nbeat takeover: lock taken {acquired_after:.2f}s after kill -9, first tick of the standby "
        f"{takeover:.2f}s after it (last tick of the killed beat {killed_at - max(before_kill):.2f}s before it)"
    )
    # One interval of the task plus the standby's retry period, with room for a loaded 2-core machine.
    assert takeover <= TICK_SECONDS + settings.BEAT_LOCK_RETRY_SECONDS + 3, f"took over after {takeover:.2f}s"


def test_a_lock_whose_session_is_ended_is_known_lost_and_the_waiting_one_takes_it() -> None:
    """What a standby sees (the holder's name), and a holder whose connection PostgreSQL ended (a failover, an
    operator's pg_terminate_backend) stops counting itself active at its next check."""
    first, second = BeatLock(), BeatLock()
    first.name, second.name = f"{first.name} first", f"{second.name} second"  # one process plays both beats
    try:
        assert first.try_acquire() == (True, None)
        acquired, holder = second.try_acquire()
        assert not acquired and holder["name"] == first.name, holder
        assert beat_lock_holder()["name"] == first.name

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                           [first.name])  # fmt: skip
        assert not first.still_held()
        assert not first.held
        wait_until(lambda: second.try_acquire()[0], timeout=10, what="the second lock taken")
        assert second.still_held()
        assert beat_lock_holder()["name"] == second.name
    finally:
        first.release()
        second.release()
    wait_until(lambda: beat_lock_holder() is None, timeout=10, what="the lock released with its session")
