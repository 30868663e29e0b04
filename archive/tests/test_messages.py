"""Messages and keys: the key comes from the message alone and is safe as a path; the document is the seed's."""

import json
from datetime import UTC, datetime

import pytest

from archive.services import InvalidArchiveMessage, archive_message_body, archive_message_parse, key_component

SEED_BODY = {
    "email_subject": "Subject",
    "email_sender": "john.doe@example.com",
    "email_timestream": "1733841022",  # 2024-12-10 14:30:22 UTC
    "email_content": "Email content",
}


def parse(body: object, fallback: str = "sqs-message-id"):
    return archive_message_parse(json.dumps(body), fallback_message_id=fallback)


def test_the_seed_producer_shape_gets_the_seed_layout_from_its_own_timestamp() -> None:
    message = parse(SEED_BODY, fallback="msg-123")
    assert message.key() == "emails/2024/12/10/john.doe/msg-123_143022.json"
    processed_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert json.loads(message.document_bytes(processed_at=processed_at)) == {
        "message_id": "msg-123",
        "processed_at": "2026-01-02T03:04:05Z",
        "email_data": SEED_BODY,
        "metadata": {"processor_version": "1.0.0", "source": "external"},
    }


def test_the_seed_document_shape_keeps_its_message_id_and_source_and_round_trips() -> None:
    body = {"message_id": "<abc@mail.example>", "email_data": SEED_BODY, "metadata": {"source": "mailbox:x@y.z"}}
    message = parse(body, fallback="ignored")
    assert message.message_id == "<abc@mail.example>" and message.source == "mailbox:x@y.z"
    assert message.key() == "emails/2024/12/10/john.doe/abc%40mail.example_143022.json"
    assert archive_message_parse(archive_message_body(message), fallback_message_id="other") == message


def test_the_key_does_not_depend_on_when_it_is_processed() -> None:
    first, again = parse(SEED_BODY), parse(SEED_BODY)
    assert first.key() == again.key()
    assert (
        first.document(processed_at=datetime.now(UTC))["email_data"]
        == again.document(processed_at=datetime(2030, 1, 1, tzinfo=UTC))["email_data"]
    )


@pytest.mark.parametrize(
    ("sender", "folder"),
    [
        ("John.Doe@Example.com", "john.doe"),
        ('"Jane Smith" <jane.smith@example.com>', "jane.smith"),
        ('"../../etc"@example.com', "%2E.%2F..%2Fetc"),
        ('".."@example.com', "%2E."),
        ('"a/b"@example.com', "a%2Fb"),
        ("üser@example.com", "%C3%BCser"),
        ("100%@example.com", "100%25"),
    ],
)
def test_the_sender_folder_is_sanitised(sender: str, folder: str) -> None:
    key = parse({**SEED_BODY, "email_sender": sender}).key()
    assert key.split("/")[4] == folder
    assert key.count("/") == 5 and "/../" not in f"/{key}/" and "/./" not in f"/{key}/"


def test_message_ids_are_sanitised_and_long_parts_stay_unique() -> None:
    key = parse({"message_id": "../x/y", "email_data": SEED_BODY}).key()
    assert key == "emails/2024/12/10/john.doe/%2E.%2Fx%2Fy_143022.json"
    long_a, long_b = "a" * 300 + "1", "a" * 300 + "2"
    a, b = key_component(long_a, max_length=150), key_component(long_b, max_length=150)
    assert len(a) <= 150 and len(b) <= 150 and a != b
    cut = key_component("é" * 100, max_length=40)  # never ends in half a %XX
    assert len(cut) <= 40 and "%" not in cut.rpartition("-")[0][-2:]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "not JSON"),
        ([1, 2], "not a JSON object"),
        ({k: v for k, v in SEED_BODY.items() if k != "email_timestream"}, "missing field(s): email_timestream"),
        ({**SEED_BODY, "email_sender": "nobody"}, "no address with a local part"),
        ({**SEED_BODY, "email_sender": "@example.com"}, "no address with a local part"),
        ({**SEED_BODY, "email_sender": 7}, "email_sender is not a string"),
        ({**SEED_BODY, "email_timestream": "yesterday"}, "not seconds since the epoch"),
        ({**SEED_BODY, "email_timestream": -5}, "out of range"),
        ({**SEED_BODY, "email_timestream": "1e30"}, "out of range"),
        ({**SEED_BODY, "email_timestream": True}, "not seconds since the epoch"),
        ({"email_data": "x"}, "email_data is not an object"),
        ({"message_id": 5, "email_data": SEED_BODY}, "message_id is not a string"),
    ],
)
def test_bad_messages_are_refused_with_the_reason(body: object, reason: str) -> None:
    raw = body if isinstance(body, str) else json.dumps(body)
    with pytest.raises(InvalidArchiveMessage, match=reason.replace("(", r"\(").replace(")", r"\)")):
        archive_message_parse(raw, fallback_message_id="m")
