"""Inbound: webhook-to-result latency at a sustained send rate, plus the classifier's own figures.

Runs in a scratch PostgreSQL database with its own redis-server, one daphne serving the simulator and POST /webhook
on loopback, and the inbound pool shaped as in the Procfile (one worker, -Q inbound,inbound_backfill, concurrency
PROCESSOR_WORKER_COUNT). One mailbox is connected; `--rate` messages per second are sent for `--seconds` through
POST /simulator/send_email (several sender threads, each message at its scheduled time). Latency = the result's
processed_at − the moment its send_email was posted, so it covers the simulator's notification, the webhook, the
sync (history + fetch), the store and the classification. Then the rows
of its classification_benchmark() (throughput per core, accuracy, confusion matrix).

    .venv/bin/python bench/inbound.py [--rate 100] [--seconds 60] [--concurrency 3]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.support.environment import bench_environment, redis_start, scratch_database  # noqa: E402
from bench.support.measure import DatabaseSampler, process_groups_cpu_seconds  # noqa: E402
from bench.support.tables import print_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="messages sent per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the rate is sustained")
    parser.add_argument("--concurrency", type=int, default=3, help="the inbound worker's processes")
    parser.add_argument("--skip-latency", action="store_true", help="only the classifier's rows")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (their path is printed)")
    options = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-inbound-"))
    try:
        with scratch_database() as (dbname, database_url):
            if not options.skip_latency:
                latency(options, scratch, database_url, dbname)
            classifier_rows()
    finally:
        if options.keep_logs:
            print(f"\nlogs: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def latency(options, scratch: Path, database_url: str, dbname: str) -> None:
    from emailsys.testing import daphne_argv, free_port, port_answers, start_process, wait_until

    redis_port = free_port()
    bench_environment(database_url, f"redis://127.0.0.1:{redis_port}/0")
    port, provider_port = free_port(), free_port()
    base, provider = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{provider_port}/simulator"
    os.environ.update(
        ALLOWED_HOSTS="127.0.0.1",
        INBOUND_SIMULATOR_ENABLED="true",
        INBOUND_SIMULATOR_AUTOCONNECT="false",
        INBOUND_PROVIDER_URL=provider,
        INBOUND_WEBHOOK_URL=f"{base}/webhook",
        PROCESSOR_WORKER_COUNT=str(options.concurrency),
    )
    import django

    django.setup()
    import urllib3
    from django.db import connection

    from emailsys.testing import worker_argv
    from processing.models import EmailResult, WebhookReceipt
    from processing.services.mailboxes import mailbox_connect

    redis = redis_start(redis_port, scratch)
    daphne = start_process("daphne", daphne_argv(port), env=dict(os.environ), log_dir=scratch)
    # The simulator stands in for the provider (Gmail's API and push), so it runs in a daphne of its own.
    provider_daphne = start_process("provider", daphne_argv(provider_port), env=dict(os.environ), log_dir=scratch)
    argv = worker_argv("inbound", node_name="inbound@bench", concurrency=options.concurrency)
    worker = start_process("worker-inbound", argv, env=dict(os.environ), log_dir=scratch)
    sent: dict[str, float] = {}
    failed: list[int] = []
    total = int(options.rate * options.seconds)
    send_seconds = float("nan")
    load_before = os.getloadavg()[0]
    groups = {"web (POST /webhook)": daphne, "inbound worker": worker, "provider (simulator)": provider_daphne}
    cpu_before: dict[str, float] = {}
    database = DatabaseSampler(dbname)
    try:
        wait_until(lambda: port_answers(port) or not daphne.alive, timeout=30, what="daphne listening")
        wait_until(lambda: port_answers(provider_port), timeout=30, what="the provider's daphne listening")
        wait_until(lambda: " ready." in worker.log_path.read_text(errors="replace"), timeout=60, what="worker ready")
        address = "bench@example.com"
        mailbox_connect(address=address, provider_url=provider, webhook_url=f"{base}/webhook")
        cpu_before = {name: process_groups_cpu_seconds({process.popen.pid}) for name, process in groups.items()}
        database.start()
        lock = threading.Lock()
        # urllib3's pool without requests on top: the load generator shares the 2 cores with what it measures.
        http = urllib3.PoolManager(maxsize=8, retries=False, timeout=30)
        started = time.monotonic() + 0.5

        def send(n: int) -> None:
            delay = started + n / options.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the message's slot in the schedule
            body = {"from": f"s{n}@example.org", "to": address, "subject": f"Bench {n}", "body": f"Message {n}."}
            at = time.time()
            answer = http.request("POST", f"{provider}/send_email", json=body)
            if answer.status != 201:  # counted, not fatal: the table says how many sends failed
                with lock:
                    failed.append(answer.status)
                return
            with lock:
                sent[answer.json()["email_id"]] = at

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(send, range(total)))
        send_seconds = time.monotonic() - started
        wait_until(
            lambda: EmailResult.objects.count() >= len(sent),
            timeout=120,
            interval=0.5,
            what="every result (or the table)",
        )
    except TimeoutError as error:
        print(f"! {error}")
    finally:
        load_after = os.getloadavg()[0]
        cpu = {name: process_groups_cpu_seconds({process.popen.pid}) - cpu_before.get(name, 0.0)
               for name, process in groups.items()}  # fmt: skip
        cpu["PostgreSQL backends"] = database.stop()[1] if database.is_alive() else float("nan")
        rows = EmailResult.objects.values_list(
            "email__email_id", "email__created_at", "processed_at", "email__history_id"
        )
        # The notification that announced each message (without faults the simulator sends one per message).
        announced = dict(WebhookReceipt.objects.values_list("history_id", "received_at"))
        processed = {email_id: (stored, done, announced.get(history_id)) for email_id, stored, done, history_id in rows}
        worker.stop()
        daphne.stop()
        provider_daphne.stop()
        redis.stop()
        connection.close()

    def stage(since: Callable[[str, float], float | None]) -> list:
        values = sorted(value * 1000 for email_id, at in sent.items()
                        if email_id in processed and (value := since(email_id, at)) is not None)  # fmt: skip
        q = statistics.quantiles(values, n=100) if len(values) > 1 else [float("nan")] * 99
        return [len(values), total - len(values), f"{q[49]:.0f}", f"{q[94]:.0f}", f"{q[98]:.0f}",
                f"{max(values, default=float('nan')):.0f}"]  # fmt: skip

    def webhook_to_result(email_id: str) -> float | None:
        _, done, webhook_at = processed[email_id]
        return None if webhook_at is None else (done - webhook_at).total_seconds()

    print(f"\nInbound, {total} messages at {options.rate:g}/s for {options.seconds:g} s "
          f"(sent in {send_seconds:.1f} s), "
          f"one mailbox, 1 inbound worker × {options.concurrency}, DEBUG off; load average before/after: "
          f"{load_before:.1f}/{load_after:.1f} on {os.cpu_count()} cores")  # fmt: skip
    print_table(
        ["stage", "results", "missing", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        [
            ["send_email → processed_at", *stage(lambda email_id, at: processed[email_id][1].timestamp() - at)],
            ["webhook received → processed_at", *stage(lambda email_id, _: webhook_to_result(email_id))],
            ["  send_email → stored", *stage(lambda email_id, at: processed[email_id][0].timestamp() - at)],
            ["  stored → processed_at", *stage(lambda email_id, at: (processed[email_id][1] - processed[email_id][0])
                                               .total_seconds())],
        ],
    )  # fmt: skip
    if failed:
        print(f"! {len(failed)} send_email calls failed (HTTP {sorted(set(failed))}): not in the table")
    print("target: p95 < 500 ms")
    received = max(1, len(sent))
    print_table(
        ["CPU while sending and until the last result", "CPU s", "ms per message"],
        [[name, f"{seconds:.1f}", f"{seconds * 1000 / received:.2f}"] for name, seconds in cpu.items()],
    )


def classifier_rows() -> None:
    """The classifier's own figures: throughput per core, held-out accuracy, precision/recall, confusion matrix."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailsys.settings.local")
    django.setup()
    from processing.classifier.evaluate import classification_benchmark

    rows, confusion = classification_benchmark()
    print("\nClassifier (processing.classifier.evaluate; held-out split of the shipped corpus)")
    print_table(["metric", "value", "detail"], [[row["metric"], row["value"], row["detail"]] for row in rows])
    print("\nconfusion matrix (held-out)\n" + confusion)


if __name__ == "__main__":
    main()
