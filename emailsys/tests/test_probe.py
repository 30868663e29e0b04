"""`manage.py probe <role>`, the Kubernetes exec probes: against a real Celery worker and a real SQS bridge on moto,
exit 0 with one line while the process is alive, 1 with the reason once it is gone or when it is another node."""

import io
import socket
import subprocess
import sys

import pytest
from django.core.management import call_command

from emailsys.health import process_heartbeats_key
from emailsys.management.commands.probe import probe_roles
from emailsys.ops_clients import ops_redis
from emailsys.sqs import sqs_queues_ensure
from emailsys.testing import BASE_DIR, process_env, sqs_bridge_argv, unique_token, wait_until, worker_argv

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def probe(*args: str) -> tuple[int, str]:
    """The command in this process (fast, for polling): (exit code, its line)."""
    out = io.StringIO()
    try:
        call_command("probe", *args, stdout=out)
    except SystemExit as exit_:
        return int(exit_.code), out.getvalue().strip()
    return 0, out.getvalue().strip()


def probe_process(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The command as an orchestrator runs it: its own process, its exit status."""
    argv = [sys.executable, "manage.py", "probe", *args]
    return subprocess.run(argv, cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_worker_probe_pings_only_its_own_node(processes) -> None:
    host = socket.gethostname()
    node = f"probe-{unique_token()}@{host}"
    env = process_env()
    assert probe("worker-default", "--timeout", "1") == (
        1,
        f"worker-default: UNHEALTHY: default@{host} did not answer ping within 1s",
    )  # the default node is <pool>@<this host>, as the Procfile's -n <pool>@%h
    worker = processes("worker", worker_argv("sending", node_name=node, concurrency=1), env=env)
    wait_until(lambda: probe("worker-sending", "--node", node, "--timeout", "1")[0] == 0, timeout=60, what="ping")
    answered = probe_process("worker-sending", "--node", node, env=env)
    assert (answered.returncode, answered.stdout.strip()) == (0, f"worker-sending: healthy: {node} answered ping")
    other = f"probe-{unique_token()}@{host}"  # a sibling's answer does not count for this node
    assert probe("worker-sending", "--node", other, "--timeout", "1")[0] == 1
    worker.kill()
    assert probe("worker-sending", "--node", node, "--timeout", "1") == (
        1,
        f"worker-sending: UNHEALTHY: {node} did not answer ping within 1s",
    )


def test_sqs_bridge_probe_follows_the_bridges_heartbeat(processes, moto_endpoint, settings, monkeypatch) -> None:
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    queue = f"probe-{unique_token()}.fifo"
    settings.SQS_ENDPOINT_URL, settings.SQS_QUEUE_NAME, settings.SQS_QUEUE_URL = moto_endpoint, queue, ""
    sqs_queues_ensure(name=queue, max_receive_count=3, visibility_timeout=30)
    env = process_env(SQS_ENDPOINT_URL=moto_endpoint, SQS_QUEUE_NAME=queue, SQS_WAIT_SECONDS="1", **AWS_ENV)
    ops_redis().delete(process_heartbeats_key("sqs-bridge"))  # earlier tests' bridges
    host = socket.gethostname()
    assert probe("sqs-bridge") == (1, f"sqs-bridge: UNHEALTHY: no sqs-bridge has reported on {host}")

    bridge = processes("bridge", sqs_bridge_argv(), env=env)
    wait_until(lambda: probe("sqs-bridge")[0] == 0, timeout=60, what="the bridge's first heartbeat")
    assert probe("sqs-bridge") == (0, f"sqs-bridge: healthy: 1 sqs-bridge(s) alive on {host}")
    assert probe("sqs-bridge", "--host", "another-host")[0] == 1  # a bridge elsewhere does not make this one alive

    bridge.kill()  # kill -9: no goodbye, the heartbeat just stops
    wait_until(lambda: probe("sqs-bridge", "--max-age", "3")[0] == 1, timeout=30, what="the heartbeat to go stale")
    code, line = probe("sqs-bridge", "--max-age", "3")
    assert (
        code == 1
        and line.startswith(f"sqs-bridge: UNHEALTHY: last sqs-bridge heartbeat on {host} ")
        and "(limit 3s)" in line
    )


def test_probe_names_the_roles_it_knows() -> None:
    with pytest.raises(Exception, match="unknown role 'worker-nope': one of worker-default, "):
        call_command("probe", "worker-nope")
    assert {"beat", "sqs-bridge", "archiver", "imap-idle", "worker-sending", "worker-inbound"} <= set(probe_roles())
