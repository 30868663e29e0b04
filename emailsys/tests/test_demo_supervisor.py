"""The demo's process set (the Procfile under honcho, as `make demo` runs it) on spare ports: /healthz gets
to 200 with every component healthy, Flower wants its credentials, the admin login works, and Ctrl-C leaves
no process and no listening port behind."""

import re
import signal
import time
from pathlib import Path

import pytest
import requests
from django.core.management import call_command

from campaigns.tests.scenarios import dispatch_tick_every
from emailsys.testing import BIN_DIR, free_port, port_answers, process_env, unique_token, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def processes_marked(marker: str) -> set[int]:
    """Live processes whose environment carries the marker: everything the supervisor started."""
    pids = set()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                pids.add(int(environ.parent.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids


def admin_login(base_url: str, username: str, password: str) -> requests.Response:
    session = requests.Session()
    form = session.get(f"{base_url}/admin/login/", timeout=10)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    return session.post(
        f"{base_url}/admin/login/?next=/admin/",
        data={"csrfmiddlewaretoken": csrf, "username": username, "password": password},
        headers={"Referer": f"{base_url}/admin/login/"},
        timeout=10,
    )


@pytest.mark.timeout(240)
def test_demo_processes_come_up_healthy_and_ctrl_c_stops_them_all(
    processes, django_user_model, tmp_path, monkeypatch
) -> None:
    django_user_model.objects.create_superuser("demo-admin", "admin@localhost", "demo-password")
    ports = {
        "WEB_PORT": free_port(),
        "FLOWER_PORT": free_port(),
        "SMTP_CAPTURE_PORT": free_port(),
        "MOTO_PORT": free_port(),
    }
    monkeypatch.setenv("SMTP_CAPTURE_PORT", str(ports["SMTP_CAPTURE_PORT"]))
    call_command("load_demo_data")  # as make demo does: the demo campaign sends to the capture server
    dispatch_tick_every(seconds=1)
    captured_mail = tmp_path / "captured"
    marker = f"EMAILSYS_DEMO_RUN={unique_token()}"
    env = process_env(
        **{name: str(port) for name, port in ports.items()},
        FLOWER_BASIC_AUTH="ops:flower-secret",
        MAIL_CAPTURE_DIR=str(captured_mail),
        EMAILSYS_DEMO_RUN=marker.partition("=")[2],
        # As make demo sets them: the bridge creates its queue on the Procfile's moto server.
        SQS_ENDPOINT_URL=f"http://127.0.0.1:{ports['MOTO_PORT']}",
        SQS_QUEUE_NAME=f"demo-{unique_token()}.fifo",
        AWS_ACCESS_KEY_ID="demo",
        AWS_SECRET_ACCESS_KEY="demo",
    )
    honcho = processes("honcho", [str(BIN_DIR / "honcho"), "start", "-f", "Procfile"], env=env)
    base_url = f"http://127.0.0.1:{ports['WEB_PORT']}"

    started = time.monotonic()
    healthz = wait_until(
        lambda: (r := requests.get(f"{base_url}/healthz", timeout=10)).status_code == 200 and r.json(),
        timeout=90,
        interval=0.5,
        what="/healthz 200",
    )
    print(f"/healthz 200 after {time.monotonic() - started:.1f}s")
    assert all(component["healthy"] for component in healthz["components"].values())

    flower = f"http://127.0.0.1:{ports['FLOWER_PORT']}/"
    wait_until(lambda: port_answers(ports["FLOWER_PORT"]), timeout=30, what="flower listening")
    assert requests.get(flower, timeout=10).status_code == 401
    assert requests.get(flower, auth=("ops", "wrong"), timeout=10).status_code == 401
    assert requests.get(flower, auth=("ops", "flower-secret"), timeout=10).status_code == 200

    logged_in = admin_login(base_url, "demo-admin", "demo-password")
    assert logged_in.url == f"{base_url}/admin/" and "Site administration" in logged_in.text
    refused = admin_login(base_url, "demo-admin", "not-the-password")
    assert "Please enter the correct username and password" in refused.text

    captured = wait_until(lambda: sorted(captured_mail.glob("*.eml")), timeout=60, what="demo campaign mail captured")
    assert b"Subject: Quick question" in captured[0].read_bytes()

    supervised = processes_marked(marker)
    assert len(supervised) >= 11  # honcho, web, four pools (with their children), beat, flower, capture, moto, bridge
    assert "sqs_bridge polling" in honcho.log(400), "the bridge found the queue it created on moto"
    honcho.signal_group(signal.SIGINT)  # what Ctrl-C in the terminal sends
    honcho.popen.wait(timeout=30)
    wait_until(lambda: not processes_marked(marker), timeout=15, what="every demo process gone")
    assert not any(port_answers(port) for port in ports.values())
