"""The seed's REST API as its clients meet it: /results, /emails, /emails/{id}, /stats with a token, refusals
without one or without the permissions, filters, pagination, and any path id a 404 (never a 500)."""

from datetime import datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.utils import timezone
from rest_framework.test import APIClient

from emailsys.testing import api_authorization
from processing.models import InboundEmail
from processing.tests.inbound_rows import email_make, mailbox_make, result_make

pytestmark = pytest.mark.django_db


def client_of(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=api_authorization(user))
    return client


@pytest.fixture
def viewer() -> APIClient:
    user = get_user_model().objects.create_user("viewer", is_staff=True)
    user.groups.add(Group.objects.get(name="viewer"))
    return client_of(user)


def test_result_is_404_until_classified_then_the_seeds_shape(viewer) -> None:
    email = email_make(email_id="abc-123")
    missing = viewer.get("/results/abc-123")
    assert missing.status_code == 404
    assert "detail" in missing.json()

    result_make(email, classification="meeting", confidence=0.87, ms=4.5)
    body = viewer.get("/results/abc-123").json()
    assert set(body) == {"email_id", "classification", "confidence", "processed_at", "processor_id",
                         "processing_time_ms"}  # fmt: skip
    assert body["email_id"] == "abc-123"
    assert body["classification"] == "meeting"
    assert body["confidence"] == 0.87
    assert body["processing_time_ms"] == 4.5
    assert body["processor_id"] == "test-node/default@1"
    assert datetime.fromisoformat(body["processed_at"]).utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "email_id", ["x" * 5000, "nul%00byte", "%F0%9F%92%A5", "..", "a b", "%ED%A0%80", "'; DROP TABLE x;--"]
)
def test_any_path_id_is_a_json_404(viewer, email_id: str) -> None:
    for prefix in ("/results/", "/emails/"):
        answer = viewer.get(prefix + email_id)
        assert answer.status_code == 404, (prefix, email_id, answer.content[:200])
        assert answer["Content-Type"].startswith("application/json")


def test_refusals_anonymous_401_staff_without_permission_403(viewer) -> None:
    email_make(email_id="secret")
    anonymous = APIClient()
    staff = client_of(get_user_model().objects.create_user("plain-staff", is_staff=True))
    only_emails_user = get_user_model().objects.create_user("half", is_staff=True)
    only_emails_user.user_permissions.add(Permission.objects.get(codename="view_inboundemail"))
    only_emails = client_of(only_emails_user)
    not_staff_user = get_user_model().objects.create_user("outsider")
    not_staff_user.user_permissions.add(*Permission.objects.filter(content_type__app_label="processing"))
    not_staff = client_of(not_staff_user)
    for path in ("/results/secret", "/emails", "/emails/secret", "/stats"):
        assert anonymous.get(path).status_code == 401, path
        assert staff.get(path).status_code == 403, path
        assert only_emails.get(path).status_code == 403, path
        assert not_staff.get(path).status_code == 403, path
        assert viewer.get(path).status_code in (200, 404), path


def test_email_list_filters_and_paginates(viewer) -> None:
    now = timezone.now()
    other = mailbox_make("sales@example.com")
    meeting = email_make(sender="ann@example.org", received_at=now - timedelta(days=3))
    result_make(meeting, classification="meeting")
    promo = email_make(sender="deals@shop.example", received_at=now - timedelta(days=1), mailbox=other)
    result_make(promo, classification="promotion", confidence=0.99)
    pending = email_make(sender="Ann@Example.org", received_at=now)

    everything = viewer.get("/emails").json()
    assert everything["count"] == 3
    assert [row["email_id"] for row in everything["results"]] == [pending.email_id, promo.email_id, meeting.email_id]
    assert everything["results"][0]["result"] is None
    assert everything["results"][1]["result"]["classification"] == "promotion"
    assert everything["results"][1]["classification"] == "promotion"

    def ids(**params) -> list[str]:
        answer = viewer.get("/emails", params)
        assert answer.status_code == 200, answer.content
        return sorted(row["email_id"] for row in answer.json()["results"])

    assert ids(classification="promotion") == [promo.email_id]
    assert ids(sender="ann@example.org") == sorted([meeting.email_id, pending.email_id])
    assert ids(mailbox="sales@example.com") == [promo.email_id]
    assert ids(status="queued") == [pending.email_id]
    after = (now - timedelta(days=2)).isoformat()
    assert ids(received_after=after) == sorted([promo.email_id, pending.email_id])
    assert ids(received_before=after) == [meeting.email_id]

    bad = viewer.get("/emails", {"classification": "spam", "received_after": "yesterday"})
    assert bad.status_code == 400
    assert set(bad.json()) >= {"classification", "received_after"}

    for _ in range(101):
        email_make()
    page = viewer.get("/emails").json()
    assert page["count"] == 104
    assert len(page["results"]) == 100
    assert page["next"].endswith("/emails?page=2")
    assert len(viewer.get("/emails", {"page": 2}).json()["results"]) == 4
    assert viewer.get("/emails", {"page": 99}).status_code == 404


def test_email_detail_has_parsed_fields_text_raw_and_result(viewer) -> None:
    email = email_make(email_id="detail-1", subject="Quarterly sync", body="Let's meet on <Thursday> & talk.")
    result_make(email, classification="meeting", confidence=0.75)
    body = viewer.get("/emails/detail-1").json()
    assert body["subject"] == "Quarterly sync"
    assert body["sender"] == "ann@example.org"
    assert body["mailbox"] == "inbox@example.com"
    assert "Let's meet on <Thursday> & talk." in body["text"]
    assert body["raw"].startswith("From: Ann Example <ann@example.org>")
    assert body["result"]["classification"] == "meeting"
    assert body["result"]["signals"] == {"rule": "text/calendar METHOD=REQUEST"}

    email_make(email_id="detail-2")
    assert viewer.get("/emails/detail-2").json()["result"] is None


def test_stats_counts_per_class_and_day_with_percentiles(viewer) -> None:
    for index, (classification, ms) in enumerate([("meeting", 10.0), ("meeting", 20.0), ("intro", 30.0)]):
        result_make(
            email_make(received_at=timezone.now() - timedelta(days=index)), classification=classification, ms=ms
        )
    email_make(status=InboundEmail.Status.FAILED)
    email_make()
    email_make(received_at=timezone.now() - timedelta(days=45))

    body = viewer.get("/stats").json()
    assert body["totals"] == {"received": 6, "classified": 3, "failed": 1, "queued": 2}
    assert body["by_class"]["meeting"] == 2
    assert body["by_class"]["intro"] == 1
    assert body["by_class"]["promotion"] == 0
    assert len(body["per_day"]) == 30
    assert body["per_day"][-1]["date"] == timezone.now().date().isoformat()
    assert body["per_day"][-1]["received"] == 3  # today: one classified, the failed and the queued one
    assert sum(day["received"] for day in body["per_day"]) == 5  # the 45-day-old one is outside
    assert body["processing_time_ms"]["p50"] == pytest.approx(20.0)
    assert body["processing_time_ms"]["p99"] == pytest.approx(29.8)
    assert set(body["queue_depth"]) == {"inbound", "inbound_backfill"}


def test_stats_without_results_has_null_percentiles(viewer) -> None:
    body = viewer.get("/stats").json()
    assert body["processing_time_ms"] == {"p50": None, "p95": None, "p99": None}
    assert body["totals"]["received"] == 0
