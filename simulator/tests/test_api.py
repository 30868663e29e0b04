"""The simulator's HTTP API against a live server: send_email shapes and errors, history paging and expiry, message
fetch returning the exact bytes sent."""

import base64

import pytest
import requests

pytestmark = pytest.mark.django_db(transaction=True)


def send(url: str, payload: dict) -> requests.Response:
    return requests.post(f"{url}/send_email", json=payload, timeout=10)


def fetch_raw(url: str, address: str, email_id: str) -> bytes:
    answer = requests.get(f"{url}/mailboxes/{address}/messages/{email_id}", timeout=10)
    assert answer.status_code == 200, answer.text
    raw = answer.json()["raw"]
    assert answer.json()["size_estimate"] == len(base64.urlsafe_b64decode(raw))
    return base64.urlsafe_b64decode(raw)


def test_send_email_builds_a_message_and_numbers_it(simulator_url: str) -> None:
    answer = send(
        simulator_url,
        {
            "from": "Ann <ann@example.com>",
            "to": "Bob@Example.com",
            "subject": "Lunch?",
            "body": "Tomorrow at noon.",
            "html": "<p>Tomorrow at <b>noon</b>.</p>",
            "headers": {"X-Test": "1", "In-Reply-To": "<x@y>"},
        },
    )
    assert answer.status_code == 201, answer.text
    first = answer.json()
    assert set(first) == {"email_id", "history_id"}
    second = send(simulator_url, {"from": "ann@example.com", "to": "bob@example.com", "subject": "s", "body": "b"})
    assert second.json()["history_id"] > first["history_id"]

    raw = fetch_raw(simulator_url, "bob@example.com", first["email_id"])
    assert b"Subject: Lunch?" in raw and b"X-Test: 1" in raw and b"In-Reply-To: <x@y>" in raw
    assert b"text/html" in raw and b"Message-ID:" in raw

    profile = requests.get(f"{simulator_url}/mailboxes/bob@example.com/profile", timeout=10).json()
    assert profile["email_address"] == "bob@example.com"
    assert profile["history_id"] == second.json()["history_id"]
    assert profile["messages_total"] == 2
    listed = requests.get(f"{simulator_url}/mailboxes/bob@example.com/messages?max_results=1", timeout=10).json()
    assert listed["messages"] == [{"id": second.json()["email_id"], "history_id": second.json()["history_id"]}]


def test_send_email_to_several_mailboxes_answers_each_id(simulator_url: str) -> None:
    payload = {"from": "a@example.com", "to": ["x@example.com", "y@example.com"], "subject": "s", "body": "b"}
    answer = send(simulator_url, payload)
    assert answer.status_code == 201
    emails = answer.json()["emails"]
    assert [item["mailbox"] for item in emails] == ["x@example.com", "y@example.com"]
    assert answer.json()["email_id"] == emails[0]["email_id"] != emails[1]["email_id"]


OK = {"from": "a@example.com", "to": "b@example.com", "subject": "s", "body": "b"}


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        ({"to": "b@example.com", "subject": "s", "body": "b"}, '"from" is required'),
        ({"from": "a@example.com", "subject": "s", "body": "b"}, '"to" is required'),
        ({"from": "not an address", "to": "b@example.com", "subject": "s", "body": "b"}, "not a valid email"),
        ({"from": "a@example.com", "to": ["b@example.com", 7], "subject": "s", "body": "b"}, '"to" must be'),
        ({"from": "a@example.com", "to": [], "subject": "s", "body": "b"}, "empty list"),
        ({"from": "a@example.com", "to": "b@example.com", "subject": 5, "body": "b"}, '"subject" must be a string'),
        ({**OK, "headers": []}, '"headers"'),
        ({**OK, "headers": {"X": "a\nb"}}, "line breaks"),
        ({**OK, "headers": {"X:Y": "1"}}, "field name"),
        ({**OK, "headers": {"X": 3}}, "string value"),
        ({"to": "b@example.com", "raw_base64": "%%%"}, "not valid base64"),
        ({"to": "b@example.com", "raw": 12}, '"raw" must be a string'),
        ([1, 2], "JSON object"),
    ],
)
def test_send_email_bad_input_is_a_clear_400(simulator_url: str, payload: object, detail: str) -> None:
    answer = send(simulator_url, payload)
    assert answer.status_code == 400, answer.text
    assert detail in answer.json()["detail"]


def test_malformed_json_and_wrong_methods_are_clear(simulator_url: str) -> None:
    answer = requests.post(f"{simulator_url}/send_email", data=b"{nope", timeout=10)
    assert answer.status_code == 400 and "not valid JSON" in answer.json()["detail"]
    assert requests.post(f"{simulator_url}/send_email", data=b"\xff\xfe", timeout=10).status_code == 400
    assert requests.get(f"{simulator_url}/send_email", timeout=10).status_code == 405
    deep = requests.post(f"{simulator_url}/send_email", data=b"[" * 100_000, timeout=10)
    assert deep.status_code == 400 and "nested too deeply" in deep.json()["detail"]
    huge = requests.post(f"{simulator_url}/send_email", data=b'{"raw": "' + b"x" * 30_000_000 + b'"}', timeout=30)
    assert huge.status_code == 413 and "DATA_UPLOAD_MAX_MEMORY_SIZE" in huge.json()["detail"]
    assert requests.get(f"{simulator_url}/mailboxes/nobody@example.com/profile", timeout=10).status_code == 404
    bad_page = requests.get(f"{simulator_url}/mailboxes/nobody@example.com/history?start_history_id=x", timeout=10)
    assert bad_page.status_code == 404  # unknown mailbox first
    send(simulator_url, {"from": "a@example.com", "to": "q@example.com", "subject": "s", "body": "b"})
    for query in ("start_history_id=x", "", "start_history_id=1&max_results=0", "start_history_id=-1"):
        answer = requests.get(f"{simulator_url}/mailboxes/q@example.com/history?{query}", timeout=10)
        assert answer.status_code == 400, (query, answer.text)
    assert requests.get(f"{simulator_url}/mailboxes/q@example.com/messages/nope", timeout=10).status_code == 404


def test_raw_messages_come_back_byte_for_byte(simulator_url: str) -> None:
    eight_bit = "From: a@example.com\r\nSubject: caf\xe9\r\n\r\nna\xefve \xff body\r\n".encode("latin-1")
    malformed = b"this is not\x00 a message at all\n\n\n:::\r\n\xc3\x28"
    for raw in (eight_bit, malformed, b""):
        answer = send(simulator_url, {"to": "raw@example.com", "raw_base64": base64.b64encode(raw).decode()})
        assert answer.status_code == 201, answer.text
        assert fetch_raw(simulator_url, "raw@example.com", answer.json()["email_id"]) == raw
    # "raw" as text; surrogate escapes stand for single bytes (how Python reads 8-bit mail as str).
    text = "Subject: h\u00e9llo\n\nbyte \udce9 here\n"
    answer = send(simulator_url, {"to": "raw@example.com", "raw": text})
    expected = text.encode("utf-8", "surrogateescape")
    assert fetch_raw(simulator_url, "raw@example.com", answer.json()["email_id"]) == expected


def test_history_pages_and_answers_404_before_the_retention(simulator_url: str, settings) -> None:
    settings.INBOUND_SIMULATOR_RETENTION = 5
    sent = [
        send(simulator_url, {"from": "a@example.com", "to": "h@example.com", "subject": f"{n}", "body": "b"}).json()
        for n in range(8)
    ]
    base = f"{simulator_url}/mailboxes/h@example.com"
    profile = requests.get(f"{base}/profile", timeout=10).json()
    kept = sent[3:]
    assert profile["oldest_history_id"] == kept[0]["history_id"]

    pages, token = [], None
    while True:
        params = {"start_history_id": sent[2]["history_id"], "max_results": 2}
        params.update({"page_token": token} if token else {})
        page = requests.get(f"{base}/history", params=params, timeout=10).json()
        pages.append(page)
        token = page["next_page_token"]
        if not token:
            break
    listed = [entry["messages_added"][0]["id"] for page in pages for entry in page["history"]]
    assert listed == [item["email_id"] for item in kept]
    assert len(pages) == 3 and pages[0]["history_id"] == sent[-1]["history_id"]

    expired = requests.get(f"{base}/history", params={"start_history_id": sent[1]["history_id"]}, timeout=10)
    assert expired.status_code == 404
    assert expired.json() == {"detail": "start_history_id is older than the retention"}
    # Messages outlive their history entries, as in Gmail.
    assert fetch_raw(simulator_url, "h@example.com", sent[0]["email_id"])

    answer = requests.post(f"{base}/expire_history", json={"before": sent[6]["history_id"]}, timeout=10)
    assert answer.json()["oldest_history_id"] == sent[6]["history_id"]
    # Ids below "before" are forgotten, gaps included: a listing must start at before - 1 or later.
    too_old = {"start_history_id": sent[6]["history_id"] - 2}
    assert requests.get(f"{base}/history", params=too_old, timeout=10).status_code == 404
    start = {"start_history_id": sent[6]["history_id"] - 1}
    recent = requests.get(f"{base}/history", params=start, timeout=10).json()
    assert [entry["id"] for entry in recent["history"]] == [sent[6]["history_id"], sent[7]["history_id"]]
    assert requests.post(f"{base}/expire_history", json={"before": "x"}, timeout=10).status_code == 400


def test_deleted_message_answers_404(simulator_url: str) -> None:
    sent = send(simulator_url, {"from": "a@example.com", "to": "d@example.com", "subject": "s", "body": "b"}).json()
    url = f"{simulator_url}/mailboxes/d@example.com/messages/{sent['email_id']}"
    assert requests.delete(url, timeout=10).status_code == 200
    assert requests.get(url, timeout=10).status_code == 404
