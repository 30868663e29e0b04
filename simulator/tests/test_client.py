"""processing.provider_simulator.SimulatorProvider against the live simulator (the MailProvider contract) and
against servers that fail (retries with backoff, then a clear ProviderError)."""

import pytest
import requests

from emailsys.testing import free_port
from processing.provider_simulator import SimulatorProvider
from processing.providers import HistoryExpired, MessageGone, ProviderError

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_client_reads_history_and_messages(simulator_url: str, settings) -> None:
    settings.INBOUND_SIMULATOR_RETENTION = 3
    client = SimulatorProvider(base_url=simulator_url)
    raws = [f"Subject: m{n}\r\n\r\n\xe9t\xe9 {n}\r\n".encode("latin-1") for n in range(5)]
    sent = [client.send_email({"to": "c@example.com", "raw": raw.decode("utf-8", "surrogateescape")}) for raw in raws]

    assert client.current_history_id("C@example.com") == sent[-1]["history_id"]
    page = client.history_since("c@example.com", sent[1]["history_id"])
    assert [entry.email_ids for entry in page.entries] == [(item["email_id"],) for item in sent[2:]]
    assert page.current_history_id == sent[-1]["history_id"] and page.next_page_token is None
    with pytest.raises(HistoryExpired):
        client.history_since("c@example.com", sent[0]["history_id"])

    recent = client.recent_messages("c@example.com", limit=2)
    assert [ref.email_id for ref in recent] == [sent[4]["email_id"], sent[3]["email_id"]]
    message = client.fetch_message("c@example.com", sent[0]["email_id"])
    assert message.raw == raws[0] and message.history_id == sent[0]["history_id"]
    assert message.internal_date.tzinfo is not None

    requests.delete(f"{simulator_url}/mailboxes/c@example.com/messages/{sent[0]['email_id']}", timeout=10)
    with pytest.raises(MessageGone):
        client.fetch_message("c@example.com", sent[0]["email_id"])
    with pytest.raises(ProviderError, match="unknown mailbox"):
        client.current_history_id("nobody@example.com")

    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert client.watch("new@example.com", url="http://127.0.0.1:9/x", secret=secret) == 0
    with pytest.raises(ProviderError, match="HTTP 400.*loopback"):
        client.watch("new@example.com", url="http://example.com/x", secret=secret)


@pytest.mark.parametrize("status", [503, 429])
def test_transient_failures_are_retried(flaky_server, status: int) -> None:
    server = flaky_server(failures=2, fail_status=status, reply={"history_id": 42})
    client = SimulatorProvider(base_url=server.url, retries=3, backoff=0.01)
    assert client.current_history_id("a@example.com") == 42
    assert [record.path for record in server.snapshot()] == ["/mailboxes/a@example.com/profile"] * 3


def test_retries_run_out_into_a_clear_provider_error(flaky_server) -> None:
    server = flaky_server(failures=100, fail_status=502)
    client = SimulatorProvider(base_url=server.url, retries=2, backoff=0.01)
    with pytest.raises(ProviderError, match=r"failed after 3 attempts: HTTP 502 try later"):
        client.history_since("a@example.com", 1)
    assert len(server.snapshot()) == 3


def test_a_client_error_is_not_retried(flaky_server) -> None:
    server = flaky_server(failures=100, fail_status=400)
    client = SimulatorProvider(base_url=server.url, retries=3, backoff=0.01)
    with pytest.raises(ProviderError, match="HTTP 400"):
        client.fetch_message("a@example.com", "x")
    assert len(server.snapshot()) == 1


def test_connection_refused_is_retried_then_a_provider_error() -> None:
    client = SimulatorProvider(base_url=f"http://127.0.0.1:{free_port()}", retries=1, backoff=0.01)
    with pytest.raises(ProviderError, match="failed after 2 attempts: ConnectionError"):
        client.current_history_id("a@example.com")


def test_a_non_json_answer_is_a_provider_error(flaky_server) -> None:
    server = flaky_server(failures=0, reply={"unexpected": True})
    client = SimulatorProvider(base_url=server.url, retries=0)
    with pytest.raises(ProviderError, match="no integer 'history_id'"):
        client.current_history_id("a@example.com")
    with pytest.raises(ProviderError, match="unexpected answer"):
        client.fetch_message("a@example.com", "x")


def test_messages_are_fetched_a_batch_at_a_time(simulator_url: str) -> None:
    """One call for a page of history (Gmail's batch requests): found in the order asked, a deleted one absent."""
    client = SimulatorProvider(base_url=simulator_url)
    sent = [client.send_email({"to": "b@example.com", "from": "s@example.org", "subject": f"s{n}", "body": "x"})
            for n in range(3)]  # fmt: skip
    ids = [item["email_id"] for item in sent]
    requests.delete(f"{simulator_url}/mailboxes/b@example.com/messages/{ids[1]}", timeout=10)

    found = client.fetch_messages("b@example.com", [ids[2], ids[1], ids[0]])
    assert list(found) == [ids[2], ids[0]]
    assert [found[i].history_id for i in (ids[2], ids[0])] == [sent[2]["history_id"], sent[0]["history_id"]]
    assert b"Subject: s2" in found[ids[2]].raw

    batch = f"{simulator_url}/mailboxes/b@example.com/batch_get"
    answer = requests.post(batch, json={"ids": [ids[0], "nope"]}, timeout=10)
    assert answer.status_code == 200 and answer.json()["missing"] == ["nope"]
    for body, detail in [({"ids": ["x"] * 101}, "at most 100"), ({"ids": "x"}, '{"ids"'), ({"ids": [1]}, "strings")]:
        refused = requests.post(batch, json=body, timeout=10)
        assert refused.status_code == 400 and detail in refused.json()["detail"], refused.text
    unknown = requests.post(f"{simulator_url}/mailboxes/x@example.com/batch_get", json={"ids": []}, timeout=10)
    assert unknown.status_code == 404


def test_a_batch_answer_that_cannot_be_read_fails_only_its_message(flaky_server) -> None:
    server = flaky_server(failures=0, reply={"messages": [{"id": "a", "raw": "!!", "history_id": "x"}], "missing": []})
    client = SimulatorProvider(base_url=server.url, retries=0)
    found = client.fetch_messages("a@example.com", ["a"])
    assert isinstance(found["a"], ValueError) and "unexpected answer" in str(found["a"])
    with pytest.raises(ProviderError, match="an answer for no id asked"):
        client.fetch_messages("a@example.com", ["b"])
