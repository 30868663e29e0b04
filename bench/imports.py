"""CSV imports of 10,000 rows: the first import, and the re-import of the same, unchanged file.

In a scratch database (`bench.support.environment`: created, migrated, dropped at the end) it writes a leads
CSV (N rows, two recipients per lead, names, company, one custom column) and a contacts CSV (N rows with
attributes and an extra column) to a temporary directory and imports each the way the commands do
(`emailsys.management.imports.csv_file_import` on the file, then the service): first into an empty campaign
(or an empty contacts table), then the same file again, which must change nothing. Each pair runs `--repeat`
times, each time into a new campaign (contacts: after deleting them all); the table shows the median seconds,
the re-import's share of the first import (target: at most 1.5×) and what the last re-import reported.

    .venv/bin/python bench/imports.py [--rows 10000] [--repeat 3]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.support.environment import bench_environment, scratch_database  # noqa: E402 - after sys.path
from bench.support.tables import print_table  # noqa: E402

TARGET_RATIO = 1.5


def leads_csv(rows: int) -> str:
    lines = ["lead_id,email,first_name,last_name,company_name,website,industry"]
    lines += [
        f"lead-{n // 2},person{n}@example.com,Pérson{n},Doe{n},Company {n // 2},https://c{n // 2}.example,logistics"
        for n in range(rows)
    ]
    return "\n".join(lines) + "\n"


def contacts_csv(rows: int) -> str:
    lines = ["email,name,language,subscribed,attributes,city"]
    lines += [f'contact{n}@example.org,Contact {n},en,yes,"{{""registered"": [""VT{n % 7}""]}}",Lisbon'
              for n in range(rows)]  # fmt: skip
    return "\n".join(lines) + "\n"


def timed(function) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def report_text(report) -> str:
    parts = [f"created {report.created}", f"updated {report.updated}"]
    if hasattr(report, "unchanged"):
        parts.append(f"unchanged {report.unchanged}")
    parts.append(f"skipped {len(report.errors)}")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="rows per CSV file")
    parser.add_argument("--repeat", type=int, default=3, help="first import + re-import pairs (median reported)")
    options = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-imports-"))
    with scratch_database() as (_dbname, database_url):
        bench_environment(database_url, "redis://127.0.0.1:1/0")  # imports use no Redis
        import django

        django.setup()
        from django.db import connection

        from campaigns.models import Campaign
        from campaigns.services.imports import leads_import_csv
        from emailsys.management.imports import csv_file_import
        from workorders.models import Contact
        from workorders.services.contacts import contacts_import_csv

        leads_path, contacts_path = scratch / "leads.csv", scratch / "contacts.csv"
        leads_path.write_text(leads_csv(options.rows), encoding="utf-8")
        contacts_path.write_text(contacts_csv(options.rows), encoding="utf-8")
        results = {"leads": ([], [], None, None), "contacts": ([], [], None, None)}
        try:
            for run in range(options.repeat):
                campaign = Campaign.objects.create(name=f"Import bench {run}")

                def leads(campaign=campaign):
                    return csv_file_import(str(leads_path), lambda f: leads_import_csv(campaign=campaign, file=f))

                def contacts():
                    return csv_file_import(str(contacts_path), lambda f: contacts_import_csv(file=f))

                Contact.objects.all().delete()
                for name, function in (("leads", leads), ("contacts", contacts)):
                    first_seconds, first = timed(function)
                    again_seconds, again = timed(function)
                    firsts, agains, _, _ = results[name]
                    firsts.append(first_seconds)
                    agains.append(again_seconds)
                    results[name] = (firsts, agains, first, again)
        finally:
            connection.close()
            shutil.rmtree(scratch, ignore_errors=True)

    print(
        f"\nCSV imports, {options.rows:,} rows per file, median of {options.repeat} "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    rows = []
    for name, (firsts, agains, first, again) in results.items():
        first_median, again_median = statistics.median(firsts), statistics.median(agains)
        rows.append([name, f"{first_median:.2f}", f"{again_median:.2f}", f"{again_median / first_median:.2f}×",
                     report_text(first), report_text(again)])  # fmt: skip
    print_table(["import", "first s", "unchanged re-import s", "ratio", "first reports", "re-import reports"], rows)
    print(f"target: an unchanged re-import takes at most {TARGET_RATIO}× the first import, its rows reported unchanged")


if __name__ == "__main__":
    main()
