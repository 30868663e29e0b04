"""Two daphne web processes share the simulator's state in PostgreSQL: concurrent sends to one mailbox through both
get distinct rising history ids, the history lists every message once, and each process's dispatcher notifies."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from emailsys.testing import RecordingHttpServer, daphne_argv, free_port, port_answers, process_env, wait_until
from processing.services.mailboxes import webhook_secret_new

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.xdist_group("sim-processes")]


def test_two_web_processes_number_concurrent_messages_once(processes) -> None:
    ports = [free_port(), free_port()]
    for n, port in enumerate(ports):
        processes(f"daphne{n}", daphne_argv(port), env=process_env(INBOUND_SIMULATOR_AUTOCONNECT="false"))
    for port in ports:
        wait_until(lambda port=port: port_answers(port), timeout=30, what="daphne listening")
    urls = [f"http://127.0.0.1:{port}/simulator" for port in ports]
    with RecordingHttpServer() as recorder:
        secret = webhook_secret_new()
        watched = requests.put(
            f"{urls[0]}/mailboxes/multi@example.com/watch", json={"url": recorder.url, "secret": secret}, timeout=10
        )
        assert watched.status_code == 200

        def send(n: int) -> dict:
            payload = {"from": "a@example.com", "to": "multi@example.com", "subject": f"n{n}", "body": "b"}
            answer = requests.post(f"{urls[n % 2]}/send_email", json=payload, timeout=30)
            assert answer.status_code == 201, answer.text
            return answer.json()

        with ThreadPoolExecutor(max_workers=8) as pool:
            sent = list(pool.map(send, range(40)))
        ids = sorted(item["history_id"] for item in sent)
        assert len(set(ids)) == 40

        history = requests.get(
            f"{urls[1]}/mailboxes/multi@example.com/history", params={"start_history_id": 0}, timeout=10
        ).json()
        assert [entry["id"] for entry in history["history"]] == ids
        assert history["history_id"] == ids[-1]

        records = wait_until(lambda: len(recorder.snapshot()) >= 40 and recorder.snapshot(), timeout=20)
        assert sorted(Webhook(secret).verify(r.body, r.headers)["history_id"] for r in records) == ids
        assert {json.loads(r.body)["email_address"] for r in records} == {"multi@example.com"}
