"""Streamed CSV export of N leads' recipients (default 1,000,000): time and memory, against reading the same
rows into a list first.

In a scratch database (`bench.support.environment`) it inserts N/2 leads with two recipients each (SQL
`generate_series`, seconds), then exports them as daphne serves `/admin/…/export/leads/`: `export_chunks` over a
server-side cursor, pulled through `export_chunks_async` on an event loop, the bytes counted and dropped as a
socket would. The baseline reads the same `values_list` into a list (what a non-streamed response would hold).
Memory is the process's peak resident set (ru_maxrss) growth over the step, so the streamed export runs first.

    .venv/bin/python bench/exports.py [--rows 1000000]
"""

import argparse
import asyncio
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.support.environment import bench_environment, scratch_database  # noqa: E402 - after sys.path
from bench.support.tables import print_table  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="recipients to export")
    options = parser.parse_args()

    with scratch_database() as (_dbname, database_url):
        bench_environment(database_url, "redis://127.0.0.1:1/0")  # exports use no Redis
        import django

        django.setup()
        from django.db import connection

        from campaigns.models import Campaign, Lead
        from transfers.services.exports import EXPORTS, export_chunks, export_chunks_async

        campaign = Campaign.objects.create(name="Export bench")
        leads = options.rows // 2
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO campaigns_lead (campaign_id, external_id, custom_fields, state, stop_reason, current_step,"
                " created_at) SELECT %s, 'lead-' || n, '{\"industry\": \"logistics\"}', 'in_progress', '', 1, now()"
                " FROM generate_series(1, %s) AS n",
                [campaign.pk, leads],
            )
            cursor.execute(
                "INSERT INTO campaigns_recipient (lead_id, position, email, name, first_name, last_name,"
                " company_name, website, provider, status, unsubscribe_token)"
                " SELECT l.id, p, 'person' || l.id || '-' || p || '@example.com', '', 'Ann', 'Doe', 'Company '"
                " || l.id, 'https://example.com', '', 'not_contacted', gen_random_uuid()"
                " FROM campaigns_lead l CROSS JOIN generate_series(0, 1) AS p WHERE l.campaign_id = %s",
                [campaign.pk],
            )
        seeded = time.perf_counter() - started
        spec = EXPORTS["leads"]
        queryset = Lead.objects.filter(campaign=campaign)

        async def stream() -> tuple[int, int]:
            size = chunks = 0
            async for chunk in export_chunks_async(export_chunks(spec=spec, queryset=queryset)):
                size += len(chunk.encode())
                chunks += 1
            return size, chunks

        results = []
        before, started = peak_rss_mb(), time.perf_counter()
        size, chunks = asyncio.run(stream())
        seconds = time.perf_counter() - started
        results.append(["streamed (export_chunks_async)", f"{seconds:.1f}", f"{options.rows / seconds:,.0f}",
                        f"{size / 1e6:.0f}", f"{peak_rss_mb() - before:.0f}", f"{chunks:,}"])  # fmt: skip

        before, started = peak_rss_mb(), time.perf_counter()
        rows = list(spec.rows(queryset))
        seconds = time.perf_counter() - started
        results.append(["list of the same rows (baseline)", f"{seconds:.1f}", f"{len(rows) / seconds:,.0f}", "—",
                        f"{peak_rss_mb() - before:.0f}", "—"])  # fmt: skip
        del rows
        connection.close()

    print(f"\nLeads export, {options.rows:,} recipients (seeded in {seeded:.0f} s; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")  # fmt: skip
    print_table(["export", "s", "rows/s", "CSV MB", "peak RSS growth MB", "chunks"], results)


if __name__ == "__main__":
    main()
