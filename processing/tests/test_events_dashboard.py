"""The admin dashboard's inbound panel: today's counts per class and the latest classified messages, in the
snapshot the live dashboard publishes and in its rendered fragment; a classification marks the dashboard."""

import pytest

from emailsys.dashboard import DASHBOARD, dashboard_fragments, dashboard_snapshot
from emailsys.live import SINGLETON_ID, live_current
from processing.tests.inbound_rows import email_make, result_make

pytestmark = pytest.mark.django_db


def test_panel_shows_todays_classes_and_latest_messages() -> None:
    result_make(email_make(subject="Kick-off <Tuesday>"), classification="meeting", confidence=0.91)
    result_make(email_make(subject="Flash sale"), classification="promotion", confidence=0.99)
    email_make(subject="still queued")

    inbound = dashboard_snapshot()["inbound"]
    assert inbound["received_today"] == 3
    assert inbound["unprocessed"] == 1
    assert inbound["classified_today"]["meeting"] == 1
    assert inbound["classified_today"]["promotion"] == 1
    assert {row["subject"] for row in inbound["latest"]} == {"Kick-off <Tuesday>", "Flash sale"}

    payload = live_current(DASHBOARD, SINGLETON_ID)
    html = dashboard_fragments(SINGLETON_ID, payload)["dashboard-inbound"]
    assert "Kick-off &lt;Tuesday&gt;" in html
    assert "promotion" in html and "0.99" in html
    assert "3</span> received today" in html
