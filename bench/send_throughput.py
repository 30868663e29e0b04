"""Send throughput: the campaign pipeline against the raw ceiling of this machine, and against a slow server.

Everything runs in a scratch PostgreSQL database (created, migrated, dropped at the end), its own redis-server
on a free port and an SMTP sink on loopback: Postfix's `smtp-sink` when installed, else aiosmtpd
(`emailsys.testing.RecordingSmtpServer`, which also counts SMTP sessions).

- raw ceiling: as many processes as cores; each claims 100 rows of a plain table in one statement, then per
  row renders the scenario's Jinja2 templates (compiled once), builds an EmailMessage, sends it over one
  persistent smtplib connection and records it with one durable UPDATE (autocommit, synchronous_commit on).
  It is what this machine can do with the same ingredients and none of the bookkeeping.
- pipeline: a `campaign_scenario` campaign (unthrottled accounts, 1 step, 1 recipient per lead) made due at
  once; beat ticks the dispatcher every second, one default worker runs it, P sending workers with T threads
  send. Measured from activation until N send records are SENT.
- --slow: the sink answers DATA 300 ms late; the pipeline at several P×T against concurrency ÷ 0.3 s (capped
  by the raw ceiling), with the most PostgreSQL connections seen on the scratch database.

    .venv/bin/python bench/send_throughput.py [--emails 2000] [--concurrency 2x20 ...]
    .venv/bin/python bench/send_throughput.py --slow [--concurrency 1x10 2x25 2x50]
"""

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.support.environment import (  # noqa: E402 - after the repository root is on sys.path
    bench_environment,
    connections_free,
    redis_start,
    scratch_database,
)
from bench.support.pipeline import Engine, PipelineRun, Shape, batch_profile, pipeline_run  # noqa: E402
from bench.support.raw import raw_ceiling  # noqa: E402
from bench.support.sinks import SinkProcess, fast_sink  # noqa: E402
from bench.support.tables import print_fast, print_profile, print_slow  # noqa: E402

SLOW_DATA_DELAY = 0.3
SLOW_ROUNDS = 4  # rounds of batches per slow shape, at most
DEFAULT_BATCH_SIZE = 20  # Campaign's default batch size (the seed's)
FAST_BATCH_SIZE = 100  # the reference: one task per batch of ~100, like the raw recipe's claim of 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--emails",
        type=int,
        help="emails per fast run (default 6000: the first send waits for a beat tick, which a short run would "
        "mostly measure); the most per slow shape (default 8000: up to 4 rounds of batches)",
    )
    parser.add_argument("--slow", action="store_true", help="SMTP server answering DATA 300 ms late")
    parser.add_argument(
        "--concurrency", nargs="+", type=Shape.parse, help="sending pool shapes P×T (processes×threads)"
    )
    parser.add_argument("--accounts", type=int, default=20, help="sender accounts of the campaign (unthrottled)")
    parser.add_argument(
        "--batch-size",
        type=int,
        help=f"the campaign's batch size (default: {FAST_BATCH_SIZE} fast, as the recipe's claim; "
        f"{DEFAULT_BATCH_SIZE} slow, so every thread has a batch)",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the in-process lead_batch_send profile")
    options = parser.parse_args()
    options.batch_size = options.batch_size or (DEFAULT_BATCH_SIZE if options.slow else FAST_BATCH_SIZE)
    options.emails = options.emails or (8000 if options.slow else 6000)
    shapes = options.concurrency or ([Shape(1, 10), Shape(2, 25), Shape(2, 50)] if options.slow else [Shape(2, 20)])

    scratch = Path(tempfile.mkdtemp(prefix="bench-send-"))
    complete = False
    try:
        with scratch_database() as (dbname, database_url):
            complete = run(options, shapes, scratch, dbname, database_url)
    finally:
        if complete:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"\nincomplete run: process logs kept in {scratch}")


def run(options, shapes: list[Shape], scratch: Path, dbname: str, database_url: str) -> bool:
    """Everything inside the scratch database; returns whether every pipeline run sent all its emails."""
    from emailsys.testing import free_port

    redis_port = free_port()
    bench_environment(database_url, f"redis://127.0.0.1:{redis_port}/0")
    import django

    django.setup()
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command at INFO
    from django.db import connection

    load_before = os.getloadavg()[0]
    redis = redis_start(redis_port, scratch)
    engine = Engine(scratch)
    runs: list[PipelineRun] = []
    try:
        with fast_sink(scratch) as sink:
            raw = raw_ceiling(dbname=dbname, smtp_port=sink.port, emails=options.emails)
            profile = (
                None
                if options.no_profile
                else batch_profile(sink=sink, accounts=options.accounts, batch_size=options.batch_size)
            )
            engine.start()
            if not options.slow:
                for shape in shapes:
                    runs.append(pipeline_run(engine=engine, dbname=dbname, sink=sink, shape=shape,
                                             emails=options.emails, accounts=options.accounts,
                                             batch_size=options.batch_size))  # fmt: skip
        if options.slow:
            runs, skipped, slow_label = slow_runs(options=options, shapes=shapes, engine=engine, dbname=dbname)
    finally:
        engine.stop()
        redis.stop()
        connection.close()

    print(
        f"\n{options.accounts} unthrottled sender accounts, batch size {options.batch_size}, DEBUG off; "
        f"load average before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    if profile:
        print_profile(profile)
    if options.slow:
        print(
            f"\nraw ceiling ({os.cpu_count()} processes, {sink.label}): {raw.rate:.1f} emails/s, "
            f"{raw.cpu_ms_per_email:.1f} CPU ms/email, PostgreSQL {raw.pg_cpu_ms_per_email:.1f}"
        )
        print_slow(sink_label=slow_label, data_delay=SLOW_DATA_DELAY, raw=raw, runs=runs, skipped=skipped)
    else:
        print_fast(sink_label=sink.label, emails=options.emails, raw=raw, runs=runs)
    return all(run.sent == run.emails for run in runs)


def slow_runs(*, options, shapes: list[Shape], engine: Engine, dbname: str) -> tuple[list[PipelineRun], list[str], str]:
    """The pipeline against the slow sink per shape; a shape needing more PostgreSQL connections than the
    (shared) server has free is skipped and said so, rather than starving everyone else's connections."""
    runs, skipped = [], []
    with SinkProcess(data_delay=SLOW_DATA_DELAY) as slow_sink:
        for shape in shapes:
            free, maximum = connections_free()
            pool = int(os.environ.get("DB_POOL_MAX_SIZE") or 0)  # a pool bounds each process's connections
            per_process = min(shape.threads, pool) if pool else shape.threads
            needed = shape.processes * per_process + 2  # + beat, the default worker's child
            if needed > free:
                skipped.append(
                    f"{shape}: skipped, it needs ≈{needed} PostgreSQL connections ({per_process} per process) "
                    f"and this server accepts {free} more (max_connections {maximum})"
                )
                continue
            emails = slow_emails(shape, batch_size=options.batch_size, at_most=options.emails)
            runs.append(pipeline_run(engine=engine, dbname=dbname, sink=slow_sink, shape=shape, emails=emails,
                                     accounts=options.accounts, batch_size=options.batch_size))  # fmt: skip
        label = slow_sink.label
    return runs, skipped, label


def slow_emails(shape: Shape, *, batch_size: int, at_most: int) -> int:
    """Up to four whole rounds of batches, as `at_most` allows, at least one (a round takes batch size × 0.3 s at
    best): a thread sends its batch in sequence, so a last partial round would measure idle threads, not the
    pipeline. The threads start their batches in lockstep, so each round boundary costs a moment in which all
    of them load, reserve and render at once: more rounds measure the sustained rate better."""
    one_round = shape.processes * shape.threads * batch_size
    return max(1, min(SLOW_ROUNDS, at_most // one_round)) * one_round


if __name__ == "__main__":
    main()
