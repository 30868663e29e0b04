"""The commands as an operator runs them: archive_send_test fills the queue; archive_emails, a real process with
--health-port, archives it and answers its probes and /metrics."""

import json

import pytest
import requests
from django.core.management import CommandError, call_command

from emailsys.testing import BIN_DIR, free_port, wait_until

pytestmark = pytest.mark.timeout(120)


def test_archive_send_test_sends_seed_shaped_messages(archive_setup, capsys) -> None:
    call_command("archive_send_test", "--count", "3")
    assert "sent 3 test message(s)" in capsys.readouterr().out
    assert archive_setup.counts() == (3, 0)


def test_archive_send_test_says_clearly_when_there_is_no_queue(archive_setup, settings) -> None:
    settings.ARCHIVE_QUEUE_NAME = "archive-never-created"
    with pytest.raises(CommandError, match="archive queue not found"):
        call_command("archive_send_test", "--count", "1")


def test_the_archiver_process_archives_and_serves_probes_and_metrics(archive_setup, processes, settings) -> None:
    settings.ARCHIVE_QUEUE_NAME = f"{archive_setup.queue_name}-setup"  # --setup creates this one
    port = free_port()
    env = archive_setup.env(ARCHIVE_QUEUE_NAME=settings.ARCHIVE_QUEUE_NAME)
    argv = [str(BIN_DIR / "python"), "manage.py", "archive_emails", "--setup", "--health-port", str(port)]
    archiver = processes("archiver", argv, env=env)
    base = f"http://127.0.0.1:{port}"
    ready = wait_until(lambda: requests.get(f"{base}/readyz", timeout=2).status_code == 200, timeout=60,
                       what="archiver ready")  # fmt: skip
    assert ready
    call_command("archive_send_test", "--count", "4")
    wait_until(lambda: len(archive_setup.keys()) == 4, timeout=30, what="4 archived")
    assert requests.get(f"{base}/livez", timeout=2).json()["status"] == "ok"
    readyz = requests.get(f"{base}/readyz", timeout=2).json()
    assert readyz["storage"] == "s3" and set(readyz["queue"]) == {"visible", "in_flight"}
    metrics = requests.get(f"{base}/metrics", timeout=2).text
    assert 'archive_messages_total{outcome="archived"} 4.0' in metrics
    assert 'archive_storage_writes_total{outcome="created",storage="s3"} 4.0' in metrics
    assert requests.get(f"{base}/nothing", timeout=2).status_code == 404
    document = json.loads(
        archive_setup.s3.get_object(Bucket=archive_setup.bucket, Key=archive_setup.keys()[0])["Body"].read()
    )
    assert document["email_data"]["email_subject"].startswith("Test email ")
    assert document["metadata"]["source"] == "external"
    archiver.stop()
    assert archiver.popen.returncode == 0
