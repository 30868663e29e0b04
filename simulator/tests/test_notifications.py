"""Signed notifications after each new message, delivered in the background with the configured faults; measured
at a real HTTP receiver and verified with standardwebhooks."""

import json
import time

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from emailsys.testing import HttpRequestRecord, RecordingHttpServer, wait_until
from processing.services.mailboxes import webhook_secret_new

pytestmark = pytest.mark.django_db(transaction=True)


def watch(simulator_url: str, address: str, url: str) -> str:
    secret = webhook_secret_new()
    answer = requests.put(f"{simulator_url}/mailboxes/{address}/watch", json={"url": url, "secret": secret}, timeout=10)
    assert answer.status_code == 200, answer.text
    return secret


def send(simulator_url: str, address: str, n: int = 0) -> dict:
    payload = {"from": "a@example.com", "to": address, "subject": f"n{n}", "body": "b"}
    answer = requests.post(f"{simulator_url}/send_email", json=payload, timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.json()


def faults(simulator_url: str, **values) -> None:
    answer = requests.put(f"{simulator_url}/faults", json=values, timeout=10)
    assert answer.status_code == 200, answer.text


def history_ids(records: list[HttpRequestRecord], address: str) -> list[int]:
    bodies = [json.loads(record.body) for record in records]
    return [body["history_id"] for body in bodies if body["email_address"] == address]


def mailbox_records(recorder: RecordingHttpServer, address: str) -> list[HttpRequestRecord]:
    return [record for record in recorder.snapshot() if json.loads(record.body)["email_address"] == address]


def sentinel_arrived(simulator_url: str, recorder: RecordingHttpServer) -> None:
    """Faults off, one message to another mailbox, wait for its notification: everything queued before it has left
    the dispatcher."""
    faults(simulator_url)
    watch(simulator_url, "sentinel@example.com", recorder.url)
    expected = send(simulator_url, "sentinel@example.com")["history_id"]
    wait_until(
        lambda: expected in history_ids(recorder.snapshot(), "sentinel@example.com"), timeout=15, what="the sentinel"
    )


def test_watch_then_each_message_is_notified_signed(simulator_url: str) -> None:
    with RecordingHttpServer(status=204) as recorder:
        secret = watch(simulator_url, "w@example.com", f"{recorder.url}/webhook")
        sent = [send(simulator_url, "w@example.com", n) for n in range(3)]
        records = wait_until(lambda: len(recorder.snapshot()) >= 3 and recorder.snapshot(), timeout=10)
    for record in records:
        assert record.method == "POST" and record.path == "/webhook"
        body = Webhook(secret).verify(record.body, record.headers)
        assert body["type"] == "mailbox.history" and body["email_address"] == "w@example.com"
        assert abs(int(record.headers["webhook-timestamp"]) - time.time()) < 60
    assert sorted(history_ids(records, "w@example.com")) == [item["history_id"] for item in sent]
    assert len({record.headers["webhook-id"] for record in records}) == 3
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(webhook_secret_new()).verify(records[0].body, records[0].headers)


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        ({"url": "http://example.com/webhook", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, "loopback"),
        ({"url": "ftp://127.0.0.1/x", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, "http(s)"),
        ({"url": "http://127.0.0.1/x", "secret": "whsec_***"}, "Standard Webhooks secret"),
        ({"url": "http://127.0.0.1/x"}, '"secret" is required'),
        ({"url": 3, "secret": "x"}, '"url" must be a string'),
    ],
)
def test_watch_bad_input_is_a_clear_400(simulator_url: str, payload: dict, detail: str) -> None:
    answer = requests.put(f"{simulator_url}/mailboxes/w@example.com/watch", json=payload, timeout=10)
    assert answer.status_code == 400
    assert detail in answer.json()["detail"]


def test_faults_validation_and_reset(simulator_url: str) -> None:
    for bad in ({"drop": 2}, {"drop": "x"}, {"delay_ms": [5, 1]}, {"reorder": 1}, {"speed": 1}, {"seed": "x"}):
        assert requests.put(f"{simulator_url}/faults", json=bad, timeout=10).status_code == 400, bad
    faults(simulator_url, drop=0.1, delay_ms=[0, 50], seed=3)
    assert requests.get(f"{simulator_url}/faults", timeout=10).json()["drop"] == 0.1
    reset = requests.delete(f"{simulator_url}/faults", timeout=10).json()
    assert reset["drop"] == 0 and reset["delay_ms"] == [0, 0] and reset["reorder"] is False


def test_drop_half_of_200_roughly_half_arrive(simulator_url: str) -> None:
    with RecordingHttpServer() as recorder:
        watch(simulator_url, "drop@example.com", recorder.url)
        faults(simulator_url, drop=0.5, seed=7)
        for n in range(200):
            send(simulator_url, "drop@example.com", n)
        sentinel_arrived(simulator_url, recorder)
        arrived = history_ids(recorder.snapshot(), "drop@example.com")
    print(f"drop=0.5: {len(arrived)} of 200 notifications arrived")
    assert 70 <= len(arrived) <= 130
    assert len(set(arrived)) == len(arrived)


def test_duplicates_reuse_the_webhook_id_or_send_a_new_one(simulator_url: str) -> None:
    with RecordingHttpServer() as recorder:
        watch(simulator_url, "dup@example.com", recorder.url)
        faults(simulator_url, duplicate=1.0, seed=11)
        sent = [send(simulator_url, "dup@example.com", n)["history_id"] for n in range(20)]
        sentinel_arrived(simulator_url, recorder)
        records = wait_until(
            lambda: (
                len(
                    mine := [r for r in recorder.snapshot() if json.loads(r.body)["email_address"] == "dup@example.com"]
                )
                >= 40
                and mine
            ),
            timeout=10,
            what="40 deliveries",
        )
    by_history: dict[int, set[str]] = {}
    for record in records:
        by_history.setdefault(json.loads(record.body)["history_id"], set()).add(record.headers["webhook-id"])
    assert len(records) == 40 and sorted(by_history) == sent
    same_id = sum(1 for ids in by_history.values() if len(ids) == 1)
    print(f"duplicate=1.0: 40 deliveries for 20 messages, {same_id} with the same webhook-id, {20 - same_id} new")
    assert 0 < same_id < 20


def test_reorder_and_delay(simulator_url: str) -> None:
    arrived_at: list[float] = []
    with RecordingHttpServer(reply=lambda record: arrived_at.append(time.monotonic()) or {}) as recorder:
        watch(simulator_url, "ro@example.com", recorder.url)
        faults(simulator_url, reorder=True, seed=5)
        sent = [send(simulator_url, "ro@example.com", n)["history_id"] for n in range(20)]
        sentinel_arrived(simulator_url, recorder)
        # Eight sender threads: the sentinel may overtake the last of them on the wire, so wait for all 20.
        order = wait_until(
            lambda: (ids := history_ids(recorder.snapshot(), "ro@example.com")) and sorted(ids) == sent and ids,
            timeout=10,
            what="all 20 reordered notifications",
        )
        assert order != sent
        print(f"reorder: arrival order {order}")

        watch(simulator_url, "delay@example.com", recorder.url)
        faults(simulator_url, delay_ms=[300, 400], seed=5)
        started = time.monotonic()
        expected = send(simulator_url, "delay@example.com")["history_id"]
        wait_until(lambda: expected in history_ids(recorder.snapshot(), "delay@example.com"), timeout=10)
        assert arrived_at[-1] - started >= 0.3


def test_a_failing_receiver_is_retried_with_the_same_webhook_id(simulator_url: str, flaky_server) -> None:
    receiver = flaky_server(failures=2, fail_status=500)
    watch(simulator_url, "retry@example.com", receiver.url)
    send(simulator_url, "retry@example.com")
    wait_until(lambda: len(receiver.snapshot()) >= 3, timeout=10, what="3 attempts")
    assert len({record.headers["webhook-id"] for record in receiver.snapshot()}) == 1


def test_watch_stopped_sends_nothing_more(simulator_url: str) -> None:
    with RecordingHttpServer() as recorder:
        watch(simulator_url, "stop@example.com", recorder.url)
        assert requests.delete(f"{simulator_url}/mailboxes/stop@example.com/watch", timeout=10).status_code == 200
        send(simulator_url, "stop@example.com")
        sentinel_arrived(simulator_url, recorder)
        assert history_ids(recorder.snapshot(), "stop@example.com") == []
