"""The campaign pipeline as it runs in production: beat ticks the dispatcher, Celery workers send. Also its
in-process profile, one thread without Celery."""

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.support.measure import DatabaseSampler, process_groups_cpu_seconds

STALL_SECONDS = 30  # a pipeline run with no new SENT record for this long is reported as stalled


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
