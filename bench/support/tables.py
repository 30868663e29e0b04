"""send_throughput's printed tables."""

import os

from bench.support.pipeline import PipelineRun
from bench.support.raw import RawResult


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
             f"{raw.cpu_ms_per_email:.2f}", f"{raw.pg_cpu_ms_per_email:.2f}", cores, cores]]  # fmt: skip
    for run in runs:
        sessions = "-" if run.smtp_sessions is None else run.smtp_sessions
        rows.append([f"pipeline {run.shape}, activation → last SENT", f"{run.rate:.1f}", f"{run.elapsed:.1f}",
                     f"{run.rate / raw.rate:.0%}", f"{run.first_latency:.2f}", f"{run.cpu_ms_per_email:.2f}",
                     f"{run.pg_cpu_ms_per_email:.2f}", run.max_connections, sessions])  # fmt: skip
        rows.append([f"pipeline {run.shape}, first → last SENT", f"{run.steady_rate:.1f}", "",
                     f"{run.steady_rate / raw.rate:.0%}", "", "", "", "", ""])  # fmt: skip
    header = ["", "emails/s", "seconds", "vs raw", "1st SENT s", "CPU ms/email", "PG CPU ms/email", "max PG conns",
              "SMTP sessions"]  # fmt: skip
    print_table(header, rows)
    for run in runs:
        if run.sent < run.emails or run.other_states:
            print(f"! {run.shape}: {run.sent} of {run.emails} SENT; other send records: {run.other_states or 'none'}")
    print("target: pipeline ≥ 80% of the raw ceiling")


def print_slow(
    *, sink_label: str, data_delay: float, raw: RawResult, runs: list[PipelineRun], skipped: list[str]
) -> None:
    delay_ms = data_delay * 1000
    print(f"\nSlow server: DATA answered {delay_ms:.0f} ms late ({sink_label})")
    rows = []
    for run in runs:
        theoretical = run.shape.processes * run.shape.threads / data_delay
        expected = min(theoretical, raw.rate)
        sessions = "-" if run.smtp_sessions is None else run.smtp_sessions
        rows.append([str(run.shape), run.sent, f"{run.rate:.1f}", f"{run.steady_rate:.1f}", f"{theoretical:.0f}",
                     f"{expected:.0f}", f"{run.rate / expected:.0%}", f"{run.cpu_ms_per_email:.1f}",
                     f"{run.pg_cpu_ms_per_email:.2f}", run.max_connections, sessions])  # fmt: skip
    header = ["P×T", "emails", "emails/s", "steady/s", "P×T÷0.3s", "expected", "vs expected", "CPU ms/email",
              "PG CPU ms/email", "max PG conns", "SMTP sessions"]  # fmt: skip
    print_table(header, rows)
    for run in runs:
        if run.sent < run.emails or run.other_states:
            print(f"! {run.shape}: {run.sent} of {run.emails} SENT; other send records: {run.other_states or 'none'}")
    for line in skipped:
        print(line)
    print(f"expected = min(P×T ÷ {data_delay} s, raw ceiling {raw.rate:.0f}/s); target ≥ 80%")


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
