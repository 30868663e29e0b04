"""10,000 malformed webhook requests (hypothesis): random bytes, JSON of every shape, notifications with fields of
the wrong type or range, signed (so the body is parsed) or not, with broken or stale signature headers. Never a
500: always a 2xx or 4xx with a JSON body."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from processing.models import Mailbox
from processing.services.mailboxes import webhook_secret_new

pytestmark = pytest.mark.django_db

ADDRESS = "fuzz@example.com"
SECRET = webhook_secret_new()
LATIN1 = st.characters(min_codepoint=0, max_codepoint=255)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)
FIELD_VALUES = JSON_VALUES | st.integers(min_value=-(2**70), max_value=2**70) | st.just(ADDRESS)
NOTIFICATIONS = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["mailbox.history", "", "x"]) | JSON_VALUES,
        "email_address": st.sampled_from([ADDRESS, ADDRESS.upper(), "other@example.com", "bad"]) | FIELD_VALUES,
        "history_id": FIELD_VALUES,
    },
)
BODIES = st.one_of(
    st.binary(max_size=300),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    NOTIFICATIONS.map(lambda value: json.dumps(value).encode()),
    st.text(max_size=100).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.just(b'{"history_id": 1' + b"[" * 5000),
)
HEADER_TEXT = st.text(alphabet=LATIN1, max_size=60)
METHODS = st.sampled_from(["POST"] * 9 + ["GET", "PUT"])
EXAMPLES, PER_EXAMPLE = 1_000, 10


@st.composite
def requests(draw) -> tuple[bytes, dict[str, str]]:
    body = draw(BODIES)
    headers: dict[str, str] = {}
    mode = draw(st.sampled_from(["signed", "signed_skewed", "random", "none"]))
    webhook_id = draw(st.sampled_from(["msg_fuzz", ""]) | st.text(alphabet=LATIN1, min_size=1, max_size=250))
    if mode.startswith("signed"):
        skew = draw(st.integers(min_value=-3600, max_value=3600)) if mode == "signed_skewed" else 0
        moment = datetime.now(tz=UTC) + timedelta(seconds=skew)
        try:
            data = body.decode()
        except UnicodeDecodeError:
            data = None
        if data is not None:
            headers["HTTP_WEBHOOK_ID"] = webhook_id
            headers["HTTP_WEBHOOK_TIMESTAMP"] = str(int(moment.timestamp()))
            headers["HTTP_WEBHOOK_SIGNATURE"] = Webhook(SECRET).sign(msg_id=webhook_id, timestamp=moment, data=data)
    elif mode == "random":
        for name in ("HTTP_WEBHOOK_ID", "HTTP_WEBHOOK_TIMESTAMP", "HTTP_WEBHOOK_SIGNATURE"):
            if draw(st.booleans()):
                headers[name] = draw(HEADER_TEXT)
    if draw(st.booleans()):
        headers["CONTENT_TYPE"] = draw(st.sampled_from(["application/json", "text/plain", ""]) | HEADER_TEXT)
    return body, headers


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox.objects.create(address=ADDRESS, webhook_secret=SECRET)


def test_malformed_webhooks_never_make_a_server_error(client, mailbox) -> None:
    answers: dict[int, int] = {}

    # 1,000 examples of 10 requests each: Hypothesis's own cost per example is then paid 1,000 times, not 10,000.
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(batch=st.lists(st.tuples(requests(), METHODS), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
    def check(batch: list[tuple[tuple[bytes, dict[str, str]], str]]) -> None:
        for (body, headers), method in batch:
            headers = dict(headers)
            content_type = headers.pop("CONTENT_TYPE", "application/json")
            response = client.generic(method, "/webhook", body, content_type=content_type, **headers)
            assert 200 <= response.status_code < 500, (response.status_code, body[:200], headers)
            assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
            assert isinstance(json.loads(response.content), dict)
            answers[response.status_code] = answers.get(response.status_code, 0) + 1

    check()
    assert sum(answers.values()) == 10_000
    assert {400, 401, 405} <= set(answers), answers  # the fuzz reached every refusal (202 is random: not required)
