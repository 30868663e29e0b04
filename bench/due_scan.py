"""The dispatcher's claim of due leads on a big table: its plan and time, with and without the partial index.

In a scratch database (`bench.support.environment`, as send_throughput.py: created, migrated, dropped at the
end) it bulk-loads one active campaign's leads with `INSERT … SELECT generate_series`: 1,000 due (in progress,
next_due_at in the past), 80% finished (next_due_at NULL) and the rest in progress but due in the future; then
ANALYZE. It calls the dispatcher's own `leads_claim_due` (inside a transaction rolled back, so every variant
sees the same due leads), captures the SQL it runs, and runs `EXPLAIN (ANALYZE, BUFFERS)` on its `SELECT … FOR
UPDATE SKIP LOCKED`, each time in a rolled-back transaction. Then, for comparison, the same query with the
partial index `lead_due_in_progress` replaced by a plain index on next_due_at, and with no index on next_due_at
at all.

    .venv/bin/python bench/due_scan.py [--leads 1000000] [--due 1000] [--repeat 7]
"""

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.support.environment import (  # noqa: E402 - after the repository root is on sys.path
    bench_environment,
    redis_start,
    scratch_database,
)

TARGET_MS = 10.0
PARTIAL_INDEX = "lead_due_in_progress"
PLAIN_INDEX = "bench_lead_next_due_at"
VARIANT_LABELS = {
    "partial": f"{PARTIAL_INDEX} (partial: in progress, as shipped)",
    "plain": f"{PLAIN_INDEX} (plain, all leads)",
    "none": "none",
}


@dataclass(frozen=True)
class Measured:
    label: str
    index: str
    size: str
    plan: str
    times: list[float]


def leads_load(*, campaign_id: int, leads: int, due: int, now) -> dict[str, int]:
    """One INSERT … SELECT: every (leads // due)-th lead is due (up to an hour overdue), the others are
    finished when i % 5 != 0 (80%) and otherwise due within the next week."""
    from django.db import connection

    step = max(5, leads // due // 5 * 5)  # a multiple of 5: due leads fall among the 20% not finished
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO campaigns_lead (campaign_id, external_id, custom_fields, state, stop_reason, current_step,
                                        next_due_at, created_at)
            SELECT %(campaign)s, 'L' || i, '{}'::jsonb,
                   CASE WHEN i %% 5 = 0 THEN 'in_progress' ELSE 'finished' END, '', 1,
                   CASE WHEN i %% %(step)s = 0 THEN %(now)s - (i %% 3600) * interval '1 second'
                        WHEN i %% 5 = 0 THEN %(now)s + interval '1 minute' + (i %% 604800) * interval '1 second'
                   END,
                   %(now)s
            FROM generate_series(1, %(leads)s) AS i
            """,
            {"campaign": campaign_id, "step": step, "now": now, "leads": leads},
        )
        cursor.execute("ANALYZE campaigns_lead")
        cursor.execute(
            "SELECT count(*) FILTER (WHERE state = 'in_progress' AND next_due_at <= %(now)s),"
            " count(*) FILTER (WHERE state = 'finished'),"
            " count(*) FILTER (WHERE state = 'in_progress' AND next_due_at > %(now)s) FROM campaigns_lead",
            {"now": now},
        )
        due_count, finished, future = cursor.fetchone()
    return {"due": due_count, "finished": finished, "future": future}


def claim_capture(*, campaign_id: int, now, limit: int) -> tuple[str, list[dict], float, int]:
    """Runs the real `leads_claim_due` with its queries captured, then rolls it back (the leads stay due).
    Returns the SELECT … FOR UPDATE SKIP LOCKED as sent, every captured query, the call's ms and claimed count."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from campaigns.services.dispatch import leads_claim_due

    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        started = time.perf_counter()
        claimed = leads_claim_due(
            now=now, campaign_batch_sizes={campaign_id: 100}, limit=limit, claim="00000000-0000-4000-8000-000000000000"
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        transaction.set_rollback(True)
    selects = [query["sql"] for query in captured.captured_queries if "FOR UPDATE SKIP LOCKED" in query["sql"]]
    if len(selects) != 1:
        raise RuntimeError(f"expected one SELECT … FOR UPDATE SKIP LOCKED, captured {captured.captured_queries}")
    return selects[0], captured.captured_queries, elapsed_ms, len(claimed)


def explain(query: str, *, repeat: int) -> tuple[str, list[float]]:
    """EXPLAIN (ANALYZE, BUFFERS) `repeat` times, each in a transaction rolled back (the plan locks the rows it
    returns): the last plan's text and every execution time in ms."""
    from django.db import connection, transaction

    times, plan = [], ""
    for _ in range(repeat):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {query}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
            transaction.set_rollback(True)
        times.append(float(re.search(r"Execution Time: ([\d.]+) ms", plan).group(1)))
    return plan, times


def index_size(name: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_size_pretty(pg_relation_size(%s::regclass))", [name])
        return cursor.fetchone()[0]


def indexes_set(variant: str) -> str:
    """The scratch database's indexes on next_due_at for a variant; returns the index the variant uses."""
    from django.db import connection

    with connection.cursor() as cursor:
        if variant == "partial":
            return PARTIAL_INDEX
        cursor.execute(f"DROP INDEX IF EXISTS {PARTIAL_INDEX}")
        if variant == "plain":
            cursor.execute(f"CREATE INDEX {PLAIN_INDEX} ON campaigns_lead (next_due_at)")
            cursor.execute("ANALYZE campaigns_lead")
            return PLAIN_INDEX
        cursor.execute(f"DROP INDEX IF EXISTS {PLAIN_INDEX}")
        cursor.execute("ANALYZE campaigns_lead")
        return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=1_000_000, help="leads in the campaign")
    parser.add_argument("--due", type=int, default=1000, help="of which due now")
    parser.add_argument("--repeat", type=int, default=7, help="EXPLAIN ANALYZE runs per variant (median reported)")
    options = parser.parse_args()

    from emailsys.testing import free_port

    scratch = Path(tempfile.mkdtemp(prefix="bench-due-"))
    redis_port = free_port()
    with scratch_database() as (_dbname, database_url):
        bench_environment(database_url, f"redis://127.0.0.1:{redis_port}/0")
        import django

        django.setup()
        from django.conf import settings
        from django.db import connection

        from campaigns.models import Campaign
        from emailsys import clock

        redis = redis_start(redis_port, scratch)
        try:
            now = clock.now()
            campaign = Campaign.objects.create(name="Due scan", status=Campaign.Status.ACTIVE, batch_size=100)
            started = time.perf_counter()
            counts = leads_load(campaign_id=campaign.id, leads=options.leads, due=options.due, now=now)
            load_seconds = time.perf_counter() - started
            limit = settings.CAMPAIGN_DISPATCH_SCAN_LIMIT
            query, captured, call_ms, claimed = claim_capture(campaign_id=campaign.id, now=now, limit=limit)

            results = []
            for variant in ("partial", "plain", "none"):
                index = indexes_set(variant)
                plan, times = explain(query, repeat=options.repeat)
                results.append(
                    Measured(VARIANT_LABELS[variant], index, index_size(index) if index else "-", plan, times)
                )
        finally:
            redis.stop()
            connection.close()
            shutil.rmtree(scratch, ignore_errors=True)

    print(
        f"\n{options.leads:,} leads loaded in {load_seconds:.1f} s: {counts['due']:,} due, {counts['finished']:,} "
        f"finished, {counts['future']:,} in progress due later; one active campaign; ANALYZE done "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    print(f"\nleads_claim_due(limit={limit}) claimed {claimed} leads in {call_ms:.1f} ms (rolled back); its SQL:")
    for captured_query in captured:
        print(f"  {float(captured_query['time']) * 1000:7.1f} ms  {captured_query['sql'][:150]}")
    for measured in results:
        print(f"\n--- EXPLAIN (ANALYZE, BUFFERS) of the claim's SELECT; index on next_due_at: {measured.label}\n")
        print(measured.plan)

    print(f"\nClaim SELECT, {options.repeat} runs each (Execution Time from EXPLAIN ANALYZE)")
    print(f"{'index on next_due_at':<56} {'size':>8} {'median ms':>10} {'min ms':>8} {'max ms':>8}  index used")
    for measured in results:
        used = "yes" if measured.index and measured.index in measured.plan else "no"
        times = measured.times
        print(
            f"{measured.label:<56} {measured.size:>8} {statistics.median(times):>10.2f} {min(times):>8.2f} "
            f"{max(times):>8.2f}  {used}"
        )
    shipped = results[0]
    verdict = "meets" if statistics.median(shipped.times) < TARGET_MS else "MISSES"
    uses = "uses" if PARTIAL_INDEX in shipped.plan else "does NOT use"
    print(f"\nwith the shipped schema the claim {uses} {PARTIAL_INDEX} and {verdict} the < {TARGET_MS:.0f} ms target")


if __name__ == "__main__":
    main()
