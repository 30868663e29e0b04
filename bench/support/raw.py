"""The raw ceiling: what this machine can do with the pipeline's ingredients and none of its bookkeeping."""

import multiprocessing
import os
import smtplib
import time
from contextlib import closing
from dataclasses import dataclass

from bench.support.environment import postgres_connect
from bench.support.measure import DatabaseSampler, children_cpu_seconds

CLAIM_SIZE = 100  # the raw recipe's claim


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
