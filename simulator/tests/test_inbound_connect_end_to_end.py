"""manage.py inbound_connect --test end to end (the seed's initialize_fakemail.py --test): a daphne web process
(simulator + POST /webhook) and a real inbound worker; the command connects a mailbox, sends the four sample
emails through the simulator and exits 0 once each is classified."""

import subprocess
import sys

import pytest

from emailsys.testing import (
    BASE_DIR,
    daphne_argv,
    free_port,
    port_answers,
    process_env,
    unique_token,
    wait_until,
    worker_argv,
)
from processing.models import EmailResult

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.xdist_group("sim-processes")]


def test_inbound_connect_test_mode_waits_for_every_result(processes) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = process_env(
        INBOUND_PROVIDER_URL=f"{base}/simulator",
        INBOUND_WEBHOOK_URL=f"{base}/webhook",
        INBOUND_SIMULATOR_AUTOCONNECT="false",
    )
    processes("daphne", daphne_argv(port), env=env)
    worker = processes("worker-inbound", worker_argv("inbound", node_name=f"inbound-{unique_token()}@%h"), env=env)
    wait_until(lambda: port_answers(port), timeout=30, what="daphne listening")
    wait_until(lambda: " ready." in worker.log_path.read_text(errors="replace"), timeout=60, what="worker ready")

    command = [
        sys.executable,
        "manage.py",
        "inbound_connect",
        "--mailbox",
        "e2e@example.com",
        "--test",
        "--timeout",
        "45",
    ]
    done = subprocess.run(command, cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All 4 test emails classified." in done.stdout
    assert EmailResult.objects.filter(email__mailbox__address="e2e@example.com").count() == 4
