"""Issue 13's acceptance across real processes: daphne serving the simulator and POST /webhook, inbound workers
(two queues: fresh mail before backfill), PostgreSQL and Redis. Judged by what a user sees: rows with one result
each and GET /results/{email_id}.

1. 1,000 emails sent concurrently while the simulator duplicates, delays, reorders and drops 10 % of the
   notifications: each is stored and classified exactly once (the fallback sync catches the dropped ones).
2. kill -9 of an inbound worker mid-batch: nothing lost, nothing classified twice.
3. history expiry: a cursor older than the retention resyncs and loses nothing still available.
"""

import socket
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.contrib.auth.models import Permission, User

from emailsys.ops_clients import ops_redis
from emailsys.testing import (
    ManagedProcess,
    api_authorization,
    daphne_argv,
    free_port,
    port_answers,
    process_env,
    unique_token,
    wait_until,
    worker_argv,
)
from processing.models import EmailResult, InboundEmail, Mailbox
from processing.services.mailboxes import mailbox_connect
from processing.services.sync import fallback_sync_request

# Generous deadlines: on a 2-core CI machine every email costs four HTTP requests and two tasks (about 8 emails/s
# end to end); bench/inbound.py measures the rate, these tests the guarantees.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(420)]


class Stack:
    """daphne on a free port (simulator + webhook) and inbound workers, all on this test's database and Redis."""

    def __init__(self, processes, settings, **env: str) -> None:
        ops_redis().flushdb()  # no task left over from an earlier test
        self.processes = processes
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.simulator_url = f"{self.base}/simulator"
        settings.INBOUND_PROVIDER_URL = self.simulator_url
        settings.INBOUND_WEBHOOK_URL = f"{self.base}/webhook"
        self.env = process_env(
            INBOUND_PROVIDER_URL=self.simulator_url,
            INBOUND_WEBHOOK_URL=f"{self.base}/webhook",
            INBOUND_SIMULATOR_ENABLED="true",
            INBOUND_SIMULATOR_AUTOCONNECT="false",
            **env,
        )
        self.daphne = processes("daphne", daphne_argv(self.port), env=self.env)
        self.workers: list[ManagedProcess] = []
        self._local = threading.local()
        wait_until(lambda: port_answers(self.port) or not self.daphne.alive, timeout=30, what="daphne listening")
        assert self.daphne.alive, self.daphne.log()

    def worker(self, name: str, **env: str) -> ManagedProcess:
        node = f"{name}-{unique_token()}@{socket.gethostname()}"
        worker = self.processes(name, worker_argv("inbound", node_name=node, concurrency=2), env={**self.env, **env})
        self.workers.append(worker)
        return worker

    def workers_ready(self) -> None:
        wait_until(lambda: all(ready(worker) for worker in self.workers), timeout=30, what="inbound workers ready")

    @property
    def http(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def faults(self, **faults) -> None:
        answer = self.http.put(f"{self.simulator_url}/faults", json=faults, timeout=10)
        assert answer.status_code == 200, answer.text

    def connect(self, address: str) -> Mailbox:
        return mailbox_connect(address=address, provider_url=self.simulator_url, webhook_url=f"{self.base}/webhook")

    def send(self, to: str, n: int) -> str:
        body = {"from": f"sender{n}@example.org", "to": to, "subject": f"Message {n}", "body": f"Hello #{n}."}
        answer = self.http.post(f"{self.simulator_url}/send_email", json=body, timeout=30)
        assert answer.status_code == 201, answer.text
        return answer.json()["email_id"]

    def send_many(self, addresses: list[str], count: int, *, threads: int = 8, first: int = 0) -> list[str]:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda n: self.send(addresses[n % len(addresses)], n), range(first, first + count)))


def ready(worker: ManagedProcess) -> bool:
    return worker.log_path.exists() and " ready." in worker.log_path.read_text(errors="replace")


def all_classified(email_ids: Iterable[str], *, fallback_every: float = 3.0):
    """A predicate for wait_until: every message has its result. Every `fallback_every` s it runs the fallback
    sync, as beat would (INBOUND_FALLBACK_SYNC_INTERVAL): the messages whose notification was dropped."""
    wanted = set(email_ids)
    last = [time.monotonic()]

    def check() -> bool:
        done = EmailResult.objects.filter(email__email_id__in=wanted).count()
        if done < len(wanted) and time.monotonic() - last[0] > fallback_every:
            fallback_sync_request()
            last[0] = time.monotonic()
        return done == len(wanted)

    return check


def assert_each_once(email_ids: list[str]) -> None:
    assert len(set(email_ids)) == len(email_ids)
    assert InboundEmail.objects.filter(email_id__in=email_ids).count() == len(email_ids)
    assert InboundEmail.objects.count() == len(email_ids)
    assert EmailResult.objects.count() == len(email_ids)
    assert set(EmailResult.objects.values_list("email__email_id", flat=True)) == set(email_ids)
    assert not InboundEmail.objects.exclude(status="classified").exists()


def assert_results_served(stack: Stack, email_ids: list[str]) -> None:
    """GET /results/{email_id} with a token of a user allowed to view inbound mail: the seed's shape."""
    user = User.objects.create_user(f"reader-{unique_token()}", password="x" * 12, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_inboundemail", "view_emailresult"]))
    headers = {"Authorization": api_authorization(user)}
    results = {
        result.email.email_id: result for result in EmailResult.objects.select_related("email").filter(
            email__email_id__in=email_ids)
    }  # fmt: skip

    def fetch(email_id: str) -> None:
        answer = stack.http.get(f"{stack.base}/results/{email_id}", headers=headers, timeout=10)
        assert answer.status_code == 200, (email_id, answer.status_code, answer.text[:200])
        data = answer.json()
        assert data["email_id"] == email_id
        assert data["classification"] == results[email_id].classification
        assert data["processor_id"] == results[email_id].processor_id
        assert {"confidence", "processed_at", "processing_time_ms"} <= set(data)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(fetch, email_ids))
    assert stack.http.get(f"{stack.base}/results/no-such-id", headers=headers, timeout=10).status_code == 404


def test_a_thousand_emails_with_faulty_notifications_are_each_classified_once(processes, settings) -> None:
    stack = Stack(processes, settings)
    stack.worker("inbound-1")
    stack.worker("inbound-2")
    stack.faults(drop=0.1, duplicate=0.3, delay_ms=[0, 800], reorder=True, seed=13)
    addresses = [f"box{n}-{unique_token()}@example.com" for n in range(4)]
    for address in addresses:
        stack.connect(address)
    stack.workers_ready()

    started = time.monotonic()
    email_ids = stack.send_many(addresses, 1000, threads=6)
    wait_until(all_classified(email_ids), timeout=300, interval=0.25, what="1,000 results")
    print(f"1,000 emails sent and classified in {time.monotonic() - started:.1f} s")

    assert_each_once(email_ids)
    assert set(InboundEmail.objects.values_list("source", flat=True)) <= {"webhook", "backfill"}
    for mailbox in Mailbox.objects.all():
        assert mailbox.last_history_id == mailbox.provider_history_id >= mailbox.wanted_history_id
    assert_results_served(stack, email_ids)


def test_kill_9_of_an_inbound_worker_mid_batch_loses_nothing_and_classifies_nothing_twice(processes, settings):
    # A killed sync's lease frees the mailbox after 3 s; a new worker takes the killed one's unacknowledged
    # messages back at once (Redis visibility timeout 1 s).
    stack = Stack(processes, settings, INBOUND_SYNC_LEASE_SECONDS="3")
    victim = stack.worker("inbound-victim")
    stack.worker("inbound-survivor")
    addresses = [f"kill{n}-{unique_token()}@example.com" for n in range(2)]
    for address in addresses:
        stack.connect(address)
    stack.workers_ready()

    email_ids = stack.send_many(addresses, 300)
    wait_until(lambda: EmailResult.objects.count() >= 30, timeout=30, what="the batch under way")
    victim.kill()
    assert EmailResult.objects.count() < 300, "the batch finished before the kill: nothing was tested"
    stack.worker("inbound-after", CELERY_VISIBILITY_TIMEOUT="1")
    wait_until(all_classified(email_ids), timeout=150, interval=0.25, what="every result after the kill")

    assert_each_once(email_ids)
    assert_results_served(stack, email_ids[:50])


def test_a_cursor_older_than_the_retention_resyncs_and_loses_nothing_available(processes, settings) -> None:
    stack = Stack(processes, settings)
    stack.worker("inbound-1")
    address = f"expiry-{unique_token()}@example.com"
    mailbox = stack.connect(address)
    stack.workers_ready()
    before = stack.send_many([address], 10)
    wait_until(all_classified(before), timeout=30, what="the first ten")
    cursor = Mailbox.objects.get(pk=mailbox.pk).last_history_id

    stack.faults(drop=1.0)  # every notification lost while the provider forgets our cursor's history
    during = stack.send_many([address], 25, first=10)
    current = stack.http.get(f"{stack.simulator_url}/mailboxes/{address}/profile", timeout=10).json()["history_id"]
    answer = stack.http.post(
        f"{stack.simulator_url}/mailboxes/{address}/expire_history", json={"before": current - 5}, timeout=10
    )
    assert answer.status_code in (200, 204), answer.text
    assert Mailbox.objects.get(pk=mailbox.pk).last_history_id == cursor

    fallback_sync_request()
    wait_until(all_classified(during), timeout=30, what="everything after the expiry")
    # The resync stores every message, then moves the cursor and leaves its warning.
    mailbox = wait_until(
        lambda: Mailbox.objects.filter(pk=mailbox.pk, last_history_id__gte=current).exclude(last_warning="").first(),
        timeout=10,
        what="the resync's cursor and warning",
    )
    assert mailbox.last_warning.startswith("Resynced: history from") and mailbox.last_history_id >= current
    assert_each_once(before + during)
    assert set(InboundEmail.objects.filter(email_id__in=during).values_list("source", flat=True)) == {"backfill"}
