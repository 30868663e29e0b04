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
import multiprocessing
import os
import resource
import secrets
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
SLOW_DATA_DELAY = 0.3
SLOW_ROUNDS = 4  # rounds of batches per slow shape, at most
CLAIM_SIZE = 100  # the raw recipe's claim
STALL_SECONDS = 30  # a pipeline run with no new SENT record for this long is reported as stalled
DEFAULT_BATCH_SIZE = 20  # Campaign's default batch size (the seed's)
FAST_BATCH_SIZE = 100  # the reference: one task per batch of ~100, like the raw recipe's claim of 100


# --- Scratch database and environment ---------------------------------------------------------------


def postgres_connect(dbname: str = "postgres"):
    connection = psycopg.connect(dbname=dbname, **POSTGRES)
    connection.autocommit = True
    return connection


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


# --- SMTP sinks -------------------------------------------------------------------------------------


class CountingSmtpServer:
    """`RecordingSmtpServer` that also counts SMTP sessions (one EHLO each): shows connection reuse."""

    def __init__(self, *, data_delay: float = 0.0, port: int | None = None) -> None:
        from emailsys.testing import RecordingSmtpServer

        self.server = RecordingSmtpServer(data_delay=data_delay, port=port)
        self.port = self.server.port
        self.session_count = 0
        handler = self.server._controller.handler
        counter = self

        class Handler(type(handler)):
            async def handle_EHLO(self, server, session, envelope, hostname, responses):
                session.host_name = hostname
                counter.session_count += 1  # the event loop is one thread: no lock needed
                return responses

        self.server._controller.handler = Handler(self.server)

    @property
    def label(self) -> str:
        missing = "" if shutil.which("smtp-sink") else "; Postfix smtp-sink is not installed here"
        return f"aiosmtpd (emailsys.testing.RecordingSmtpServer{missing})"

    def sessions(self) -> int | None:
        return self.session_count

    def __enter__(self) -> "CountingSmtpServer":
        self.server.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.server.__exit__(*exc)


class PostfixSmtpSink:
    """Postfix's smtp-sink: a C sink that costs next to no CPU, so the figures are the sender's alone."""

    label = "Postfix smtp-sink"

    def __init__(self, scratch: Path) -> None:
        from emailsys.testing import free_port

        self.port = free_port()
        self.scratch = scratch
        self.process = None

    def sessions(self) -> int | None:
        return None

    def __enter__(self) -> "PostfixSmtpSink":
        from emailsys.testing import port_answers, start_process, wait_until

        as_root = ["-u", "nobody"] if os.geteuid() == 0 else []  # it refuses to keep root's privileges
        argv = ["smtp-sink", *as_root, f"127.0.0.1:{self.port}", "1000"]
        self.process = start_process("smtp-sink", argv, env=dict(os.environ), log_dir=self.scratch)
        wait_until(lambda: port_answers(self.port), timeout=10, what="smtp-sink")
        return self

    def __exit__(self, *exc) -> None:
        self.process.stop()


SINK_NICE = -10


def _sink_serve(data_delay: float, port: int, session_count, niced, ready, stop) -> None:
    """`CountingSmtpServer` in a process of its own, publishing its session count. It stands in for a remote
    provider, whose reply time does not grow with our CPU load: it runs at a higher priority where allowed."""
    try:
        os.nice(SINK_NICE)
        niced.value = 1
    except PermissionError:
        niced.value = 0
    with CountingSmtpServer(data_delay=data_delay, port=port) as server:
        ready.set()
        while not stop.wait(0.1):
            session_count.value = server.session_count
        session_count.value = server.session_count


class SinkProcess:
    """The aiosmtpd sink in its own process, like a real server: its event loop shares no GIL (and no CPU
    accounting) with the benchmark's own polling threads, which would otherwise delay every SMTP reply."""

    def __init__(self, *, data_delay: float = 0.0) -> None:
        from emailsys.testing import free_port

        context = multiprocessing.get_context("spawn")
        self.port = free_port()
        self.data_delay = data_delay
        self._sessions, self._niced = context.Value("i", 0), context.Value("i", 0)
        self._ready, self._stop = context.Event(), context.Event()
        self._process = context.Process(
            target=_sink_serve,
            args=(data_delay, self.port, self._sessions, self._niced, self._ready, self._stop),
            daemon=True,
        )

    @property
    def label(self) -> str:
        missing = "" if shutil.which("smtp-sink") else "; Postfix smtp-sink is not installed here"
        priority = f"at nice {SINK_NICE}" if self._niced.value else "at normal priority (not allowed to raise it)"
        return f"aiosmtpd (emailsys.testing.RecordingSmtpServer in its own process, {priority}{missing})"

    def sessions(self) -> int:
        time.sleep(0.2)  # the count is published every 0.1 s
        return self._sessions.value

    def __enter__(self) -> "SinkProcess":
        self._process.start()
        if not self._ready.wait(30):
            raise RuntimeError("the SMTP sink process did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._process.join(10)


def fast_sink(scratch: Path):
    return PostfixSmtpSink(scratch) if shutil.which("smtp-sink") else SinkProcess()


# --- Raw ceiling ------------------------------------------------------------------------------------


def raw_worker(dbname: str, smtp_port: int, templates: tuple[str, str, str], barrier, results) -> None:
    """One core's worth of the raw recipe; reports (started, finished, sent)."""
    from email.headerregistry import Address
    from email.message import EmailMessage
    from email.policy import SMTP
    from email.utils import formatdate, make_msgid

    from jinja2.sandbox import SandboxedEnvironment

    text_env = SandboxedEnvironment(autoescape=False, keep_trailing_newline=True)
    html_env = SandboxedEnvironment(autoescape=True, keep_trailing_newline=True)
    subject_t, text_t = (text_env.from_string(source) for source in templates[:2])
    html_t = html_env.from_string(templates[2])
    policy = SMTP.clone(max_line_length=998)

    database = postgres_connect(dbname)
    cursor = database.cursor()
    cursor.execute("SET synchronous_commit = on")
    smtp = smtplib.SMTP("127.0.0.1", smtp_port, timeout=30)
    smtp.ehlo()
    barrier.wait()
    started, sent = time.time(), 0
    while True:
        cursor.execute(
            "UPDATE raw_sends SET state = 'claimed' WHERE id IN (SELECT id FROM raw_sends WHERE state = 'queued' "
            "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id",
            [CLAIM_SIZE],
        )
        claimed = [row[0] for row in cursor.fetchall()]
        if not claimed:
            break
        for row_id in claimed:
            context = {
                "first_name": f"First{row_id}",
                "company_name": f"Company {row_id}",
                "sender_name": "Sender 0",
                "campaign_id": 1,
                "step_order": 1,
                "plan": "gold",
            }
            message = EmailMessage(policy=policy)
            message["From"] = Address(display_name="Sender 0", addr_spec="sender0@raw.test")
            message["To"] = Address(display_name=f"First{row_id} Last", addr_spec=f"r{row_id}@customer.test")
            message["Subject"] = subject_t.render(context)
            message["Date"] = formatdate()
            message["Message-ID"] = message_id = make_msgid(domain="raw.test")
            message.set_content(text_t.render(context))
            message.add_alternative(html_t.render(context), subtype="html")
            smtp.sendmail("sender0@raw.test", [f"r{row_id}@customer.test"], message.as_bytes())
            cursor.execute("UPDATE raw_sends SET state = 'sent', message_id = %s WHERE id = %s", [message_id, row_id])
            sent += 1
    results.put((started, time.time(), sent))
    smtp.quit()
    database.close()


@dataclass(frozen=True)
class RawResult:
    rate: float  # emails/s
    cpu_ms_per_email: float  # CPU of the sending processes (not PostgreSQL's, not the sink's)
    pg_cpu_ms_per_email: float  # the scratch database's backends


def raw_ceiling(*, dbname: str, smtp_port: int, emails: int) -> RawResult:
    """The raw recipe in one process per core (spawned: nothing of Django in them)."""
    from campaigns.tests.scenarios import BODY_HTML, BODY_TEXT, SUBJECT

    with closing(postgres_connect(dbname)) as database, database.cursor() as cursor:
        cursor.execute("CREATE TABLE raw_sends (id serial PRIMARY KEY, state text NOT NULL, message_id text)")
        cursor.execute("INSERT INTO raw_sends (state) SELECT 'queued' FROM generate_series(1, %s)", [emails])
        cursor.execute("VACUUM ANALYZE raw_sends")
    processes = os.cpu_count() or 1
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(target=raw_worker, args=(dbname, smtp_port, (SUBJECT, BODY_TEXT, BODY_HTML), barrier, results))
        for _ in range(processes)
    ]
    sampler = DatabaseSampler(dbname)
    sampler.start()
    cpu_before = children_cpu_seconds()
    for worker in workers:
        worker.start()
    reports = [results.get(timeout=600) for _ in workers]
    _, database_cpu = sampler.stop()
    for worker in workers:
        worker.join()
    sent = sum(report[2] for report in reports)
    assert sent == emails, f"raw: {sent} of {emails} sent"
    elapsed = max(report[1] for report in reports) - min(report[0] for report in reports)
    return RawResult(sent / elapsed, (children_cpu_seconds() - cpu_before) * 1000 / sent, database_cpu * 1000 / sent)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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


def pid_cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


# --- Pipeline -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    processes: int
    threads: int

    @classmethod
    def parse(cls, text: str) -> "Shape":
        processes, _, threads = text.lower().replace("×", "x").partition("x")
        return cls(int(processes), int(threads))

    def __str__(self) -> str:
        return f"{self.processes}×{self.threads}"


@dataclass
class PipelineRun:
    shape: Shape
    emails: int
    sent: int
    elapsed: float  # activation → last SENT
    first_latency: float  # activation → first SENT
    steady_rate: float  # first SENT → last SENT
    max_connections: int
    smtp_sessions: int | None
    cpu_ms_per_email: float  # beat, default and sending workers (not PostgreSQL's, not the sink's)
    pg_cpu_ms_per_email: float  # the scratch database's backends
    other_states: dict

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed else 0.0


class Engine:
    """Beat (dispatch every second) and one default worker, started once; sending workers per shape."""

    def __init__(self, scratch: Path) -> None:
        from emailsys.testing import process_env, unique_token

        self.scratch = scratch
        self.env = process_env(DJANGO_SETTINGS_MODULE="emailsys.settings.local")
        self.token = unique_token()
        self.processes = []

    def start(self) -> None:
        from django_celery_beat.models import IntervalSchedule, PeriodicTask

        from emailsys.testing import beat_argv, start_process, worker_argv

        schedule = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)[0]
        PeriodicTask.objects.filter(name="campaigns: dispatch").update(interval=schedule)
        argv = worker_argv("default", node_name=f"default-{self.token}@bench", concurrency=1)
        self.processes.append(start_process("worker-default", argv, env=self.env, log_dir=self.scratch))
        self.processes.append(start_process("beat", beat_argv(self.scratch), env=self.env, log_dir=self.scratch))
        self._wait_for_workers([f"default-{self.token}@bench"])

    def sending_start(self, shape: Shape) -> list:
        from emailsys.testing import start_process, worker_argv

        nodes, started = [], []
        for index in range(shape.processes):
            node = f"sending{index}-{shape.processes}x{shape.threads}-{self.token}@bench"
            argv = worker_argv("sending", node_name=node, concurrency=shape.threads)
            started.append(start_process(node.split("@")[0], argv, env=self.env, log_dir=self.scratch))
            nodes.append(node)
        self._wait_for_workers(nodes)
        return started

    def _wait_for_workers(self, nodes: list[str]) -> None:
        from emailsys.celery import app
        from emailsys.testing import wait_until

        wait_until(
            lambda: len(app.control.ping(destination=nodes, timeout=0.5)) == len(nodes),
            timeout=60,
            what=f"workers {nodes} answering",
        )

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def scenario_build(*, smtp_port: int, emails: int, accounts: int, name: str, batch_size: int):
    """A campaign of `emails` one-recipient leads through unthrottled accounts, left in draft: nothing is
    dispatched until `campaign_activate` (the whole build commits at once)."""
    from django.db import transaction

    from campaigns.models import Campaign
    from campaigns.tests.scenarios import campaign_scenario

    with transaction.atomic():
        scenario = campaign_scenario(
            smtp_port=smtp_port,
            accounts=accounts,
            daily_limit=10**9,
            min_wait_seconds=0,
            leads=emails,
            recipients_per_lead=1,
            steps=1,
            name=name,
        )
        Campaign.objects.filter(id=scenario.campaign.id).update(status=Campaign.Status.DRAFT, batch_size=batch_size)
    return scenario.campaign


def campaign_activate(campaign) -> float:
    """Every lead due now and the campaign active, in one commit; returns that moment (epoch seconds)."""
    from django.db import transaction

    from campaigns.models import Campaign, Lead
    from emailsys import clock

    now = clock.now()
    with transaction.atomic():
        Lead.objects.filter(campaign=campaign).update(next_due_at=now)
        Campaign.objects.filter(id=campaign.id).update(status=Campaign.Status.ACTIVE)
    return now.timestamp()


def pipeline_run(
    *, engine: Engine, dbname: str, sink, shape: Shape, emails: int, accounts: int, batch_size: int
) -> PipelineRun:
    from django.db.models import Count, Max, Min

    from campaigns.models import SendRecord

    campaign = scenario_build(
        smtp_port=sink.port,
        emails=emails,
        accounts=accounts,
        name=f"Bench {shape.processes}x{shape.threads} n{emails}",
        batch_size=batch_size,
    )
    workers = engine.sending_start(shape)
    sessions_before = sink.sessions()
    groups = {process.popen.pid for process in engine.processes + workers}  # each started in its own session
    sampler = DatabaseSampler(dbname)
    sampler.start()
    cpu_before = process_groups_cpu_seconds(groups)
    try:
        activated = campaign_activate(campaign)
        sent_records = SendRecord.objects.filter(campaign=campaign, state=SendRecord.State.SENT)
        sent, progress_at = 0, time.monotonic()
        while sent < emails and time.monotonic() - progress_at < STALL_SECONDS:
            time.sleep(0.2)
            now_sent = sent_records.count()
            if now_sent > sent:
                sent, progress_at = now_sent, time.monotonic()
        cpu = process_groups_cpu_seconds(groups) - cpu_before
    finally:
        max_connections, database_cpu = sampler.stop()
        for worker in workers:
            worker.stop()
    span = sent_records.aggregate(first=Min("sent_at"), last=Max("sent_at"))
    others = SendRecord.objects.filter(campaign=campaign).exclude(state=SendRecord.State.SENT)
    first, last = (span["first"].timestamp(), span["last"].timestamp()) if sent else (activated, activated)
    return PipelineRun(
        shape=shape,
        emails=emails,
        sent=sent,
        elapsed=last - activated,
        first_latency=first - activated,
        steady_rate=(sent - 1) / (last - first) if last > first else 0.0,
        max_connections=max_connections,
        smtp_sessions=None if sessions_before is None else sink.sessions() - sessions_before,
        cpu_ms_per_email=cpu * 1000 / max(sent, 1),
        pg_cpu_ms_per_email=database_cpu * 1000 / max(sent, 1),
        other_states=dict(others.values_list("state").annotate(n=Count("id")).values_list("state", "n")),
    )


def batch_profile(*, sink, accounts: int, batch_size: int, leads: int = 200) -> dict:
    """`send_batch`'s `lead_batch_send` in this process, one thread, with every query captured: what one email costs the
    pipeline in round trips and time, without Celery. Runs before beat starts (nothing else claims these)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from campaigns.models import Campaign, Lead
    from campaigns.services.batches import lead_batch_send, outcome_counts
    from campaigns.services.smtp import SmtpSessions

    campaign = scenario_build(
        smtp_port=sink.port, emails=leads, accounts=accounts, name="Bench profile", batch_size=batch_size
    )
    campaign_activate(campaign)
    lead_ids = list(Lead.objects.filter(campaign=campaign).order_by("id").values_list("id", flat=True))
    batch_size = Campaign.objects.get(id=campaign.id).batch_size
    outcomes: Counter = Counter()
    sessions_before = sink.sessions()
    with CaptureQueriesContext(connection) as captured:
        started, cpu_started = time.perf_counter(), time.process_time()
        sessions = SmtpSessions()  # one worker thread's sessions, kept across its batches
        for start in range(0, len(lead_ids), batch_size):
            outcomes.update(
                outcome_counts(lead_batch_send(lead_ids=lead_ids[start : start + batch_size], sessions=sessions))
            )
        sessions.close()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    # executemany is logged as "N times: SQL" (one round trip, pipelined)
    kinds = Counter(
        query["sql"].rpartition(" times: ")[2].split(None, 1)[0].upper() for query in captured.captured_queries
    )
    sql_seconds = sum(float(query["time"]) for query in captured.captured_queries)
    return {
        "emails": outcomes["sent"],
        "batch_size": batch_size,
        "outcomes": dict(outcomes),
        "ms_per_email": elapsed * 1000 / leads,
        "cpu_ms_per_email": cpu * 1000 / leads,
        "smtp_sessions": "-" if sessions_before is None else sink.sessions() - sessions_before,
        "sql_ms_per_email": sql_seconds * 1000 / leads,
        "queries_per_email": len(captured.captured_queries) / leads,
        "kinds_per_email": {kind: count / leads for kind, count in kinds.most_common()},
    }


def connections_free() -> tuple[int, int]:
    """(backends this server can still accept from ordinary users, max_connections)."""
    with closing(postgres_connect()) as database, database.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int,"
            " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        )
        maximum, reserved, used = cursor.fetchone()
    return maximum - reserved - used, maximum


def slow_emails(shape: Shape, *, batch_size: int, at_most: int) -> int:
    """Up to four whole rounds of batches, as `at_most` allows, at least one (a round takes batch size × 0.3 s at
    best): a thread sends its batch in sequence, so a last partial round would measure idle threads, not the
    pipeline. The threads start their batches in lockstep, so each round boundary costs a moment in which all
    of them load, reserve and render at once: more rounds measure the sustained rate better."""
    one_round = shape.processes * shape.threads * batch_size
    return max(1, min(SLOW_ROUNDS, at_most // one_round)) * one_round


# --- Report ---------------------------------------------------------------------------------------


def print_table(header: list[str], rows: list[list]) -> None:
    """First column left-aligned, the others right-aligned, each as wide as its widest cell."""
    cells = [header] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[index]) for row in cells) for index in range(len(header))]
    for row in cells:
        first, *rest = row
        print(
            "  ".join(
                [first.ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True)]
            )
        )


def print_profile(profile: dict) -> None:
    kinds = ", ".join(f"{kind} {count:.1f}" for kind, count in profile["kinds_per_email"].items())
    print(
        f"\nlead_batch_send in this process, 1 thread, batches of {profile['batch_size']}, {profile['emails']} emails "
        f"(outcomes {profile['outcomes']}):\n"
        f"  {profile['ms_per_email']:.1f} ms/email wall ({profile['cpu_ms_per_email']:.1f} ms CPU of this process), "
        f"SQL {profile['sql_ms_per_email']:.1f} ms; {profile['queries_per_email']:.1f} queries/email "
        f"({kinds}); {profile['smtp_sessions']} SMTP sessions"
    )


def print_fast(*, sink_label: str, emails: int, raw: RawResult, runs: list[PipelineRun]) -> None:
    cores = os.cpu_count()
    print(f"\nSend throughput, {emails} emails, {cores} cores, sink: {sink_label}")
    rows = [[f"raw ceiling ({cores} processes)", f"{raw.rate:.1f}", f"{emails / raw.rate:.1f}", "100%", "",
             f"{raw.cpu_ms_per_email:.1f}", f"{raw.pg_cpu_ms_per_email:.1f}", cores, cores]]  # fmt: skip
    for run in runs:
        sessions = "-" if run.smtp_sessions is None else run.smtp_sessions
        rows.append([f"pipeline {run.shape}, activation → last SENT", f"{run.rate:.1f}", f"{run.elapsed:.1f}",
                     f"{run.rate / raw.rate:.0%}", f"{run.first_latency:.2f}", f"{run.cpu_ms_per_email:.1f}",
                     f"{run.pg_cpu_ms_per_email:.1f}", run.max_connections, sessions])  # fmt: skip
        rows.append([f"pipeline {run.shape}, first → last SENT", f"{run.steady_rate:.1f}", "",
                     f"{run.steady_rate / raw.rate:.0%}", "", "", "", "", ""])  # fmt: skip
    header = ["", "emails/s", "seconds", "vs raw", "1st SENT s", "CPU ms/email", "PG CPU ms/email", "max PG conns",
              "SMTP sessions"]  # fmt: skip
    print_table(header, rows)
    for run in runs:
        if run.sent < run.emails or run.other_states:
            print(f"! {run.shape}: {run.sent} of {run.emails} SENT; other send records: {run.other_states or 'none'}")
    print("target: pipeline ≥ 80% of the raw ceiling")


def print_slow(*, sink_label: str, raw: RawResult, runs: list[PipelineRun], skipped: list[str]) -> None:
    delay_ms = SLOW_DATA_DELAY * 1000
    print(f"\nSlow server: DATA answered {delay_ms:.0f} ms late ({sink_label})")
    rows = []
    for run in runs:
        theoretical = run.shape.processes * run.shape.threads / SLOW_DATA_DELAY
        expected = min(theoretical, raw.rate)
        sessions = "-" if run.smtp_sessions is None else run.smtp_sessions
        rows.append([str(run.shape), run.sent, f"{run.rate:.1f}", f"{run.steady_rate:.1f}", f"{theoretical:.0f}",
                     f"{expected:.0f}", f"{run.rate / expected:.0%}", f"{run.cpu_ms_per_email:.1f}",
                     f"{run.pg_cpu_ms_per_email:.1f}", run.max_connections, sessions])  # fmt: skip
    header = ["P×T", "emails", "emails/s", "steady/s", "P×T÷0.3s", "expected", "vs expected", "CPU ms/email",
              "PG CPU ms/email", "max PG conns", "SMTP sessions"]  # fmt: skip
    print_table(header, rows)
    for run in runs:
        if run.sent < run.emails or run.other_states:
            print(f"! {run.shape}: {run.sent} of {run.emails} SENT; other send records: {run.other_states or 'none'}")
    for line in skipped:
        print(line)
    print(f"expected = min(P×T ÷ {SLOW_DATA_DELAY} s, raw ceiling {raw.rate:.0f}/s); target ≥ 80%")


# --- Main -----------------------------------------------------------------------------------------


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


def run(options, shapes: list[Shape], scratch: Path, dbname: str, database_url: str) -> bool:
    """Everything inside the scratch database; returns whether every pipeline run sent all its emails."""
    from emailsys.testing import free_port, port_answers, redis_server_argv, start_process, wait_until

    redis_port = free_port()
    bench_environment(database_url, f"redis://127.0.0.1:{redis_port}/0")
    import django

    django.setup()
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command at INFO
    from django.db import connection

    load_before = os.getloadavg()[0]
    redis = start_process("redis", redis_server_argv(redis_port, scratch), env=dict(os.environ), log_dir=scratch)
    engine = Engine(scratch)
    runs: list[PipelineRun] = []
    try:
        wait_until(lambda: port_answers(redis_port), timeout=10, what="redis-server")
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
        print_slow(sink_label=slow_label, raw=raw, runs=runs, skipped=skipped)
    else:
        print_fast(sink_label=sink.label, emails=options.emails, raw=raw, runs=runs)
    return all(run.sent == run.emails for run in runs)


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


if __name__ == "__main__":
    main()
