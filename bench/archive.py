"""Archive throughput: messages/s from moto's SQS into moto's S3 (and into a local directory) through
`manage.py archive_emails` processes, as the Procfile runs them.

Starts its own moto_server and redis-server (so it never touches a running demo), puts N messages in the seed's
shape on a fresh queue, starts the archiver(s) and times until the queue is empty (every message stored and
deleted). No database is used. Prints a table; "writes only" rows are the storage alone, without SQS (moto's
ReceiveMessage scans its whole queue, so it slows down with the queue's length: the SQS rows measure moto).

    .venv/bin/python bench/archive.py [--messages 500] [--archivers 1 2]
"""

import argparse
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.support.environment import redis_start  # noqa: E402 - after the repository root is on sys.path
from bench.support.tables import print_table  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailsys.settings.local")
AWS_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500, help="messages per run")
    parser.add_argument("--archivers", type=int, nargs="+", default=[1, 2], help="archiver processes per S3 run")
    options = parser.parse_args()

    from emailsys.testing import free_port, moto_server_argv, port_answers, start_process, wait_until

    scratch = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    redis_port, moto_port = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    moto = f"http://127.0.0.1:{moto_port}"
    os.environ.update(AWS_ENV, REDIS_URL=redis_url, SQS_ENDPOINT_URL=moto, DEBUG="false",
                      SECRET_KEY=secrets.token_urlsafe(50))  # fmt: skip
    processes = [redis_start(redis_port, scratch)]
    processes.append(start_process("moto", moto_server_argv(moto_port), env=dict(os.environ), log_dir=scratch))
    wait_until(lambda: port_answers(moto_port), timeout=30, what="moto_server listening")

    import boto3
    import django

    django.setup()
    from archive.management.commands.archive_send_test import archive_test_bodies
    from archive.services import archive_queue_depth, archive_queues_ensure
    from emailsys.sqs import sqs_client
    from emailsys.testing import BIN_DIR, process_env

    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1")

    def run(label: str, *, archivers: int, storage_env: dict[str, str]) -> list:
        name = f"bench-{label.replace(' ', '-')}-{archivers}"
        url, dead_letter_url = archive_queues_ensure(name=name, max_receive_count=5, visibility_timeout=60)
        bodies = archive_test_bodies(count=options.messages, start=1733841022)
        for start in range(0, len(bodies), 10):
            entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start : start + 10])]
            sqs_client().send_message_batch(QueueUrl=url, Entries=entries)
        env = process_env(DJANGO_SETTINGS_MODULE="emailsys.settings.local", ARCHIVE_QUEUE_NAME=name,
                          POLL_INTERVAL_SECONDS="1", VISIBILITY_TIMEOUT_SECONDS="60", **storage_env)  # fmt: skip
        argv = [str(BIN_DIR / "python"), "manage.py", "archive_emails"]
        started = time.perf_counter()
        running = [start_process(f"{name}-{n}", argv, env=env, log_dir=scratch) for n in range(archivers)]
        try:
            wait_until(lambda: archive_queue_depth(url)["visible"] < options.messages, timeout=60, interval=0.02,
                       what="the first receive")  # fmt: skip
            first = time.perf_counter()
            wait_until(lambda: not any(archive_queue_depth(url).values()), timeout=600, interval=0.1,
                       what="the queue empty")  # fmt: skip
            done = time.perf_counter()
        finally:
            for process in running:
                process.stop()
        dead = archive_queue_depth(dead_letter_url)["visible"]
        total = done - started
        return [label, archivers, options.messages, f"{total:.1f}", f"{options.messages / total:.0f}",
                f"{options.messages / (done - first):.0f}", dead]  # fmt: skip

    def writes_only(label: str, storage) -> list:
        """The storage alone, in this process: conditional writes of seed documents, one after the other."""
        from archive.services import archive_message_parse

        bodies = archive_test_bodies(count=options.messages, start=1733841022)
        messages = [archive_message_parse(body, fallback_message_id=f"w{n}") for n, body in enumerate(bodies)]
        started = time.perf_counter()
        for message in messages:
            storage.write_new(message.key(), message.document_bytes(processed_at=message.sent_at))
        elapsed = time.perf_counter() - started
        return [f"{label}, writes only", "-", options.messages, f"{elapsed:.1f}", f"{options.messages / elapsed:.0f}",
                "", ""]  # fmt: skip

    rows = []
    try:
        from archive.services import LocalArchiveStorage, S3ArchiveStorage

        s3.create_bucket(Bucket="bench-archive-writes")
        rows.append(writes_only("moto S3", S3ArchiveStorage(bucket="bench-archive-writes", endpoint_url=moto,
                                                             region="us-east-1", kms_key_id="")))  # fmt: skip
        rows.append(writes_only("local dir", LocalArchiveStorage(scratch / "writes")))
        for archivers in options.archivers:
            bucket = f"bench-archive-{archivers}"
            s3.create_bucket(Bucket=bucket)
            storage = {"ARCHIVE_S3_BUCKET": bucket, "ARCHIVE_S3_ENDPOINT_URL": moto}
            rows.append(run("moto S3", archivers=archivers, storage_env=storage))
        local = {"ARCHIVE_S3_BUCKET": "", "ARCHIVE_LOCAL_DIR": str(scratch / "archive")}
        rows.append(run("local dir", archivers=1, storage_env=local))
    finally:
        for process in reversed(processes):
            process.stop()
    print(f"\nArchive throughput, {options.messages} messages per run, {os.cpu_count()} cores, moto server for SQS")
    print_table(["storage", "archivers", "messages", "seconds", "msgs/s (from start)", "msgs/s (first → last)",
                 "dead-lettered"], rows)  # fmt: skip


if __name__ == "__main__":
    main()
