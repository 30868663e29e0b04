"""Inbound metrics on GET /metrics: events, classes, webhook outcomes, the classification time histogram (shared
through Redis) and each mailbox's sync lag (from the database)."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from emailsys.ops_clients import ops_redis
from processing.metrics import COUNTS_KEY, SECONDS_KEY, classification_observe, inbound_count
from processing.models import Mailbox

pytestmark = pytest.mark.django_db


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_counts_histogram_and_sync_lag_appear(client) -> None:
    ops_redis().delete(COUNTS_KEY, SECONDS_KEY)
    Mailbox.objects.create(address="behind@example.com", last_history_id=40, provider_history_id=52)
    Mailbox.objects.create(address="new@example.com", provider_history_id=7)
    inbound_count("received", amount=3)
    inbound_count("poison_skipped")
    inbound_count("classified", label="meeting")
    inbound_count("classified", label="meeting")
    inbound_count("webhook", label="bad_signature")
    classification_observe(seconds=0.002, classification="meeting")
    classification_observe(seconds=0.3, classification="meeting")

    samples = scrape(client)
    assert samples[("emailsys_inbound_emails_total", (("event", "received"),))] == 3
    assert samples[("emailsys_inbound_emails_total", (("event", "poison_skipped"),))] == 1
    assert samples[("emailsys_inbound_emails_total", (("event", "resync"),))] == 0
    assert samples[("emailsys_inbound_classified_total", (("classification", "meeting"),))] == 2
    assert samples[("emailsys_inbound_webhooks_total", (("outcome", "bad_signature"),))] == 1
    assert samples[("emailsys_inbound_webhooks_total", (("outcome", "accepted"),))] == 0
    seconds = "emailsys_inbound_classification_seconds"
    assert samples[(f"{seconds}_count", (("classification", "meeting"),))] == 2
    assert samples[(f"{seconds}_bucket", (("classification", "meeting"), ("le", "0.0025")))] == 1
    assert samples[(f"{seconds}_sum", (("classification", "meeting"),))] == pytest.approx(0.302)
    assert samples[("emailsys_inbound_sync_lag", (("mailbox", "behind@example.com"),))] == 12
    assert samples[("emailsys_inbound_sync_lag", (("mailbox", "new@example.com"),))] == 7
