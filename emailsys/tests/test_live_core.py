"""The live core's contract through the real ASGI application served by daphne, the Redis channel layer and real
WebSocket clients: idle sockets stay up, a (re)connecting client gets the current state first, versions come from
PostgreSQL in commit order, progress is coalesced across threads and processes with the last state always
published, and a live outage never fails the work it reports."""

import asyncio
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import websockets
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from emailsys import live
from emailsys.live import live_changed, live_publish_now
from emailsys.metrics import LIVE_METRICS_KEY, LIVE_SOCKETS_KEY_PREFIX, LIVE_SOCKETS_TTL_SECONDS, live_metrics_write
from emailsys.ops_clients import ops_redis
from emailsys.testing import BASE_DIR, ManagedProcess, free_port, process_env, wait_until
from emailsys.tests.test_live_websocket import cookie_of, daphne, logged_in, serving, staff_user, subscribe
from workorders.models import WorkOrder, WorkOrderStep
from workorders.services.state import workorder_steps_create
from workorders.tests.factories import WorkOrderFactory

pytestmark = pytest.mark.django_db(transaction=True)

IDLE_SECONDS = 60
RECV_TIMEOUT = 10


@pytest.fixture(scope="module")
def core_daphne(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[tuple[ManagedProcess, int]]:
    with django_db_blocker.unblock(), daphne(tmp_path_factory) as served:
        yield served


@pytest.fixture
def port(core_daphne) -> Iterator[int]:
    yield from serving(core_daphne)


@pytest.fixture
def cookie(django_user_model) -> str:
    return cookie_of(logged_in(staff_user(django_user_model, "watcher", "workorders.view_workorder")))


@pytest.fixture
def work_order() -> WorkOrder:
    work_order = WorkOrderFactory()
    workorder_steps_create(work_order=work_order)
    return work_order


async def subscribe_list(port: int, cookie: str, group: str, ids: str):
    headers = {"Origin": f"http://127.0.0.1:{port}", "Cookie": cookie}
    socket = await websockets.connect(f"ws://127.0.0.1:{port}/ws/live/{group}/?ids={ids}", additional_headers=headers)
    assert json.loads(await asyncio.wait_for(socket.recv(), timeout=RECV_TIMEOUT)) == {
        "type": "subscribed",
        "group": group,
    }
    return socket


def version_of(work_order: WorkOrder) -> int:
    return WorkOrder.objects.values_list("live_version", flat=True).get(id=work_order.id)


async def next_update(socket, timeout: float = RECV_TIMEOUT) -> dict:
    message = json.loads(await asyncio.wait_for(socket.recv(), timeout=timeout))
    assert message["type"] == "update", message
    return message["payload"]


async def in_thread(function, *args):
    """Runs ORM work off the event loop, closing the thread's connection after (teardown drops the database)."""

    def run():
        try:
            return function(*args)
        finally:
            connection.close()

    return await asyncio.to_thread(run)


def held_by(lock_owner: str) -> dict:
    """A lease held by `lock_owner`: a visible change of a work order's live state."""
    return {"lock_owner": lock_owner, "lock_acquired_at": timezone.now(), "lock_expires_at": timezone.now()}


def change(work_order_id: int, lock_owner: str) -> int:
    """A state change as services make it: the UPDATE and `live_changed` in one transaction; the new version."""
    with transaction.atomic():
        WorkOrder.objects.filter(id=work_order_id).update(**held_by(lock_owner))
        live_changed("workorder", work_order_id)
        return WorkOrder.objects.values_list("live_version", flat=True).get(id=work_order_id)


# --- a channel layer that stays up ---------------------------------------------------------------------------


def test_the_channel_layers_reads_outlast_channels_redis_blocking_read() -> None:
    """django/channels_redis#422: redis-py's socket timeout must exceed the layer's blocking read (BZPOPMIN), or an
    idle consumer's read times out ("Timeout reading from …") and daphne closes its socket with 1011."""
    (host,) = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
    assert host["socket_timeout"] >= 2 * RedisChannelLayer.brpop_timeout


@pytest.mark.timeout(IDLE_SECONDS + 60)
def test_an_idle_socket_stays_open_for_a_minute_and_still_relays(core_daphne, port, cookie) -> None:
    process, _ = core_daphne
    group = "workorder-987654321"  # no such work order: nothing is sent on connecting

    async def scenario() -> dict:
        async with await subscribe(port, cookie, group) as socket:
            with pytest.raises(TimeoutError):  # a minute of silence, the socket open throughout
                await asyncio.wait_for(socket.recv(), timeout=IDLE_SECONDS)
            await asyncio.to_thread(live_publish_now, group=group, payload={"version": 1})
            return json.loads(await asyncio.wait_for(socket.recv(), timeout=RECV_TIMEOUT))

    assert asyncio.run(scenario()) == {"type": "update", "group": group, "payload": {"version": 1}}
    log = process.log(tail=500)
    assert "Timeout reading" not in log and "Traceback" not in log, log


# --- resync on (re)connect -----------------------------------------------------------------------------------


def test_a_client_gets_the_current_snapshot_right_after_subscribing(port, cookie, work_order) -> None:
    change(work_order.id, "worker-a")

    async def scenario() -> dict:
        async with await subscribe(port, cookie, f"workorder-{work_order.id}") as socket:
            return await next_update(socket)

    payload = asyncio.run(scenario())
    assert payload["key"] == f"workorder-{work_order.id}"
    assert payload["version"] == version_of(work_order)
    assert payload["data"]["lock_owner"] == "worker-a"
    assert [step["name"] for step in payload["data"]["steps"]] == list(
        WorkOrderStep.objects.filter(work_order=work_order).order_by("order").values_list("name", flat=True)
    )


def test_a_list_socket_gets_each_objects_snapshot_then_their_updates_and_ignores_bad_ids(port, cookie) -> None:
    first, second = WorkOrderFactory(), WorkOrderFactory()
    ids = f"abc,{first.id},0,-3,{second.id},{first.id},99999999999999999999999,987654321"

    async def scenario() -> tuple[list[dict], list[dict]]:
        async with await subscribe_list(port, cookie, "workorders", ids) as socket:
            snapshots = [await next_update(socket), await next_update(socket)]
            await in_thread(change, first.id, "one")
            await in_thread(change, second.id, "two")
            return snapshots, [await next_update(socket), await next_update(socket)]

    snapshots, updates = asyncio.run(scenario())
    assert [(p["id"], p["version"]) for p in snapshots] == [(first.id, 0), (second.id, 0)]
    assert sorted((p["id"], p["version"], p["data"]["lock_owner"]) for p in updates) == [
        (first.id, 1, "one"),
        (second.id, 1, "two"),
    ]


# --- versions --------------------------------------------------------------------------------------------------


def test_concurrent_changes_get_increasing_versions_in_commit_order(port, cookie, work_order) -> None:
    """The second writer waits for the first one's row lock, so it cannot commit first nor get a lower version."""
    first_changed, first_may_commit = threading.Event(), threading.Event()
    committed: list[tuple[str, int]] = []

    def writer(name: str, wait: threading.Event | None) -> None:
        try:
            with transaction.atomic():
                WorkOrder.objects.filter(id=work_order.id).update(**held_by(name))
                live_changed("workorder", work_order.id)
                if wait is not None:
                    first_changed.set()
                    wait.wait(timeout=RECV_TIMEOUT)
                version = WorkOrder.objects.values_list("live_version", flat=True).get(id=work_order.id)
            committed.append((name, version))
        finally:
            connection.close()

    async def scenario() -> list[dict]:
        async with await subscribe(port, cookie, f"workorder-{work_order.id}") as socket:
            assert (await next_update(socket))["version"] == 0
            first = threading.Thread(target=writer, args=("first", first_may_commit))
            second = threading.Thread(target=writer, args=("second", None))
            first.start()
            assert await asyncio.to_thread(first_changed.wait, RECV_TIMEOUT)
            second.start()  # blocks on the row lock of the first
            await in_thread(lambda: wait_until(lambda: lock_waiters() >= 1, timeout=RECV_TIMEOUT, what="lock wait"))
            first_may_commit.set()
            await asyncio.to_thread(first.join)
            await asyncio.to_thread(second.join)
            return [await next_update(socket), await next_update(socket)]

    updates = asyncio.run(scenario())
    assert committed == [("first", 1), ("second", 2)]
    by_version = {p["version"]: p["data"]["lock_owner"] for p in updates}
    assert by_version == {1: "first", 2: "second"}  # whichever arrived first, the page keeps version 2
    assert version_of(work_order) == 2


def lock_waiters() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def test_a_rolled_back_change_publishes_nothing_and_uses_no_version(port, cookie, work_order) -> None:
    def rolled_back() -> None:
        with pytest.raises(RuntimeError), transaction.atomic():
            WorkOrder.objects.filter(id=work_order.id).update(**held_by("never"))
            live_changed("workorder", work_order.id)
            raise RuntimeError("the change fails after announcing itself")

    async def scenario() -> dict:
        async with await subscribe(port, cookie, f"workorder-{work_order.id}") as socket:
            await next_update(socket)
            await in_thread(rolled_back)
            await in_thread(change, work_order.id, "committed")
            return await next_update(socket)  # the next message is the committed one's

    payload = asyncio.run(scenario())
    assert (payload["version"], payload["data"]["lock_owner"]) == (1, "committed")
    assert version_of(work_order) == 1


# --- coalesced progress ------------------------------------------------------------------------------------------

MARKS_PER_THREAD = 125
THREADS_PER_PROCESS = 4
MARKING_SECONDS = 2.0
# Marks progress like a sending hot path: one step's `done` goes up by one per email, announced by
# live_progress; the process then lets its coalescer publish the trailing mark before it exits.
MARKER = """
import sys, threading, time
import django
django.setup()
from django.db import connection, transaction
from django.utils import timezone
from django.db.models import F
from emailsys import live
from emailsys.testing import wait_until
from workorders.models import WorkOrderStep

step_id, work_order_id, marks, threads, seconds = map(float, sys.argv[1:])
def mark():
    for _ in range(int(marks)):
        with transaction.atomic():
            WorkOrderStep.objects.filter(id=int(step_id)).update(done=F("done") + 1)
            live.live_progress("workorder", int(work_order_id))
        time.sleep(seconds / marks)  # the pace of the hot path, not a wait
    connection.close()
workers = [threading.Thread(target=mark) for _ in range(int(threads))]
started = time.time()
[worker.start() for worker in workers]
[worker.join() for worker in workers]
print(started, time.time(), flush=True)
wait_until(lambda: not live._coalescer().pending, timeout=10, what="the trailing mark taken")
live.live_flush()  # as at a worker's shutdown: the thread's publish in progress ends first
"""


def test_progress_from_two_processes_of_several_threads_is_coalesced_and_the_last_state_published(
    port, cookie, work_order
) -> None:
    step = WorkOrderStep.objects.filter(work_order=work_order).order_by("order").first()
    total = 2 * THREADS_PER_PROCESS * MARKS_PER_THREAD
    argv = [sys.executable, "-c", MARKER, str(step.id), str(work_order.id), str(MARKS_PER_THREAD),
            str(THREADS_PER_PROCESS), str(MARKING_SECONDS)]  # fmt: skip
    live_metrics_write()  # this process's counts of earlier tests, before the counters start from zero
    ops_redis().delete(LIVE_METRICS_KEY)

    async def scenario() -> tuple[list[dict], float]:
        async with await subscribe(port, cookie, f"workorder-{work_order.id}") as socket:
            await next_update(socket)
            markers = [subprocess.Popen(argv, cwd=BASE_DIR, env=process_env(), stdout=subprocess.PIPE, text=True)
                       for _ in range(2)]  # fmt: skip
            outputs = [await asyncio.to_thread(marker.communicate, timeout=60) for marker in markers]
            assert [marker.returncode for marker in markers] == [0, 0], outputs
            windows = [tuple(map(float, out.split())) for out, _ in outputs]
            elapsed = max(end for _, end in windows) - min(start for start, _ in windows)  # marking, both processes
            updates = []
            while not updates or updates[-1]["data"]["steps"][0]["done"] < total:
                updates.append(await next_update(socket))
            return updates, elapsed

    updates, elapsed = asyncio.run(scenario())
    assert WorkOrderStep.objects.get(id=step.id).done == total
    assert updates[-1]["data"]["steps"][0]["done"] == total  # the trailing edge: the final state
    versions = [update["version"] for update in updates]
    assert len(set(versions)) == len(versions)
    # Every mark either became a message (to the work order's group) or was coalesced away,
    # as both processes counted them.
    counts = wait_until(lambda: live_counts_when(lambda c: c.get("coalesced", 0) + c.get("published", 0) >= total),
                        timeout=10, what="every mark counted")  # fmt: skip
    messages = counts["published"]
    assert counts["coalesced"] + messages == total, counts
    # At most: the first mark's, one per LIVE_PROGRESS_SECONDS while marking, and each process's trailing mark.
    assert len(updates) <= messages <= elapsed / settings.LIVE_PROGRESS_SECONDS + 1 + 2, (messages, elapsed)


def live_counts_when(predicate) -> dict[str, int] | None:
    counts = {key.decode(): int(value) for key, value in ops_redis().hgetall(LIVE_METRICS_KEY).items()}
    return counts if predicate(counts) else None


# --- a live outage ---------------------------------------------------------------------------------------------


def test_an_unreachable_channel_layer_never_fails_the_change_it_reports(settings, work_order, caplog) -> None:
    unreachable = {"address": f"redis://127.0.0.1:{free_port()}/0", "socket_connect_timeout": 1}
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [unreachable]}}
    }
    live._live_loop.down_until = 0.0
    caplog.set_level(logging.WARNING, logger="emailsys.live")
    try:
        started = time.monotonic()
        assert change(work_order.id, "during-outage") == 1
        assert live_publish_now(group="dashboard", payload={"version": 1}) is False
        for _ in range(20):  # a worker's next steps: they do not wait for the channel layer again
            change(work_order.id, "during-outage")
        elapsed = time.monotonic() - started
    finally:
        live._live_loop.down_until = 0.0

    assert WorkOrder.objects.values_list("lock_owner", "live_version").get(id=work_order.id) == ("during-outage", 21)
    assert elapsed < live.PUBLISH_TIMEOUT_SECONDS
    assert "live publish to workorder-" in caplog.text


# --- metrics ---------------------------------------------------------------------------------------------------


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_open_sockets_and_delivered_messages_are_on_metrics(client, core_daphne, port, cookie, work_order) -> None:
    """Counted by the daphne process, read from Redis by whichever web process serves /metrics."""
    redis = ops_redis()
    redis.delete(LIVE_METRICS_KEY, *redis.scan_iter(match=f"{LIVE_SOCKETS_KEY_PREFIX}*"))

    sockets_open = lambda: scrape(client)[("emailsys_live_sockets_open", ())]  # noqa: E731

    delivered = lambda: scrape(client)[("emailsys_live_messages_total", (("outcome", "delivered"),))]  # noqa: E731

    async def scenario() -> tuple[float, float]:
        await asyncio.to_thread(wait_until, lambda: sockets_open() == 0, timeout=15, what="earlier sockets closed")
        sockets = [await subscribe(port, cookie, f"workorder-{work_order.id}") for _ in range(3)]
        for client_socket in sockets:
            await next_update(client_socket)
        await in_thread(change, work_order.id, "counted")
        for client_socket in sockets:
            await next_update(client_socket)
        opened = await asyncio.to_thread(wait_until, lambda: sockets_open() == 3, timeout=10, what="3 open")
        for client_socket in sockets:
            await client_socket.close()
        closed = await asyncio.to_thread(wait_until, lambda: sockets_open() == 0, timeout=10, what="0 open")
        return opened, closed

    asyncio.run(scenario())
    # 3 snapshots on connect and 3 updates (>=: an earlier test's last counts may still be on their way)
    assert wait_until(lambda: delivered() >= 6, timeout=10, what="6 delivered")
    key = f"{LIVE_SOCKETS_KEY_PREFIX}{socket.gethostname()}:{core_daphne[0].popen.pid}"
    assert 0 < redis.ttl(key) <= LIVE_SOCKETS_TTL_SECONDS  # a killed daphne's sockets expire
