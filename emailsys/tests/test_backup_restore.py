"""Backup and restore as the README's "Backup and restore" says: `pg_dump -Fc` of a database in the middle of a
campaign, `pg_restore` into a new database, the dispatcher pointed at the restored one. Judged by the SMTP log:
nothing the backup knew as sent is sent again, limits included, and what was still to send is sent."""

import os
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from campaigns.tests.scenarios import campaign_scenario, mail_step, run_until_idle
from emailsys.clock import clock_set_offset
from emailsys.testing import BIN_DIR, RecordingSmtpServer, process_env, unique_token, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def noon_offset(days: int = 0) -> float:
    real = datetime.now(UTC)
    noon = real.replace(hour=12, minute=0, second=0, microsecond=0) + timedelta(days=days)
    return (noon - real).total_seconds()


def postgres_argv(program: str, *args: str) -> list[str]:
    params = connection.settings_dict
    return [program, "-h", params.get("HOST") or "127.0.0.1", "-p", str(params.get("PORT") or 5432),
            "-U", params.get("USER") or "postgres", *args]  # fmt: skip


@pytest.mark.timeout(120)
def test_a_restored_backup_sends_what_was_due_and_nothing_it_had_sent(processes, tmp_path, settings) -> None:
    clock_file = tmp_path / "clock-offset"
    clock_set_offset(path=clock_file, seconds=noon_offset())
    settings.CLOCK_OFFSET_FILE = str(clock_file)
    source = connection.settings_dict["NAME"]
    restored = f"{source}_restored_{unique_token()}"
    dump = tmp_path / "emailsys.dump"
    pg_env = {**os.environ, "PGPASSWORD": connection.settings_dict.get("PASSWORD") or ""}
    with RecordingSmtpServer() as smtp:
        # 3 leads × 2 steps = 6 emails; 2 accounts × 2 a day: 4 go today, 2 wait for tomorrow.
        campaign_scenario(smtp_port=smtp.port, accounts=2, daily_limit=2, leads=3, recipients_per_lead=1, steps=2)
        run_until_idle()
        before_backup = smtp.snapshot()
        assert len(before_backup) == 4

        subprocess.run(postgres_argv("pg_dump", "-Fc", "-f", str(dump), source), env=pg_env, check=True, timeout=60)
        subprocess.run(postgres_argv("createdb", restored), env=pg_env, check=True, timeout=30)
        try:
            subprocess.run(postgres_argv("pg_restore", "--no-owner", "-d", restored, str(dump)), env=pg_env,
                           check=True, timeout=60)  # fmt: skip
            restored_url = f"{process_env()['DATABASE_URL'].rpartition('/')[0]}/{restored}"
            env = process_env(DATABASE_URL=restored_url, CLOCK_OFFSET_FILE=str(clock_file))
            argv = [str(BIN_DIR / "python"), "manage.py", "run_dispatcher", "--interval", "0.5"]
            dispatcher = processes("run-dispatcher", argv, env=env)
            # Still today: the restored send records hold both accounts at their limit, so nothing goes.
            wait_until(lambda: dispatcher.log().count("lead(s)") >= 3, timeout=30, interval=0.1, what="3 scans today")
            assert len(smtp.snapshot()) == 4, "the restored database sent again what it had recorded as sent"

            clock_set_offset(path=clock_file, seconds=noon_offset(days=1))
            wait_until(lambda: len(smtp.snapshot()) >= 6, timeout=30, interval=0.1, what="tomorrow's 2 emails")
            scans = dispatcher.log().count("lead(s)")
            wait_until(lambda: dispatcher.log().count("lead(s)") >= scans + 2, timeout=30, interval=0.1,
                       what="2 more scans")  # fmt: skip
            dispatcher.stop()
            mails = smtp.snapshot()
        finally:
            subprocess.run(postgres_argv("dropdb", "--if-exists", "--force", restored), env=pg_env, timeout=30)

    assert len(mails) == 6
    sent = [(mail.rcpt_tos, mail_step(mail)) for mail in mails]
    assert len(set(sent)) == 6, f"a recipient got a step twice: {sent}"
    assert {(rcpt, step) for rcpt, step in sent} == {
        ((f"r0.lead{lead}@customer.test",), step) for lead in range(3) for step in (1, 2)
    }
