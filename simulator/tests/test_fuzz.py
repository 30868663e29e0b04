"""Any JSON (or not JSON) sent to the simulator's endpoints gets a clear answer, never a 500."""

import json

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.django_db(transaction=True)

FIELDS = ["from", "to", "subject", "body", "html", "headers", "raw", "raw_base64", "url", "secret", "before"]
FIELDS += ["drop", "duplicate", "delay_ms", "reorder", "seed"]
SAMPLES = ["a@example.com", "Ann <a@example.com>", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "http://127.0.0.1:1/x"]
SAMPLES += ["\x00", "a\r\nb", "x" * 300 + "@example.com"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=False),
    st.text(max_size=40), st.sampled_from(SAMPLES),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=6,
)
bodies = st.one_of(st.dictionaries(st.sampled_from(FIELDS), values, max_size=6), values)
paths = st.sampled_from(
    [
        ("POST", "/send_email"), ("PUT", "/faults"), ("PUT", "/mailboxes/f@example.com/watch"),
        ("POST", "/mailboxes/f@example.com/expire_history"), ("PUT", "/mailboxes/%00/watch"),
    ]
)  # fmt: skip
queries = st.sampled_from(["/profile", "/history", "/messages", "/messages/x"]).flatmap(
    lambda path: st.tuples(st.just(path), st.text(max_size=12), st.sampled_from(["a@example.com", "%00", "x" * 300]))
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=paths, body=bodies)
def test_json_bodies_never_give_a_500(simulator_url: str, target: tuple[str, str], body: object) -> None:
    method, path = target
    answer = requests.request(method, simulator_url + path, data=json.dumps(body), timeout=10)
    assert answer.status_code < 500, (body, answer.text)
    assert "detail" in answer.json() or answer.status_code < 300


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=queries, raw_body=st.binary(max_size=50))
def test_reads_and_raw_bodies_never_give_a_500(simulator_url: str, query: tuple, raw_body: bytes) -> None:
    path, parameter, address = query
    for name in ("start_history_id", "max_results", "page_token"):
        answer = requests.get(f"{simulator_url}/mailboxes/{address}{path}", params={name: parameter}, timeout=10)
        assert answer.status_code < 500, answer.text
    answer = requests.post(f"{simulator_url}/send_email", data=raw_body, timeout=10)
    assert answer.status_code in (201, 400), answer.text
