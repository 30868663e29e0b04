"""Live kinds "campaign" and "account": their snapshots, the fragments rendered from them (the page contract of
live.js: id, data-live-key, data-live-v), and which changes announce themselves (a version bump in the changing
transaction; progress marks published by `live_flush`)."""

import re
from datetime import timedelta

import pytest

from campaigns.models import Activity, Campaign, Lead, SenderAccount
from campaigns.selectors import account_snapshot, campaign_snapshot
from campaigns.services.accounts import account_reset_limits, account_set_status
from campaigns.services.batches import campaign_complete_if_done, lead_batch_send
from campaigns.services.leads import leads_stop
from campaigns.services.lifecycle import campaign_set_status
from campaigns.services.recipients import recipient_mark_replied
from campaigns.services.smtp import SmtpSessions
from campaigns.services.throttling import account_record_failure
from campaigns.tests.conftest import NOW
from campaigns.tests.factories import (
    AccountDailyUsageFactory,
    ActivityFactory,
    CampaignAccountFactory,
    CampaignFactory,
    LeadFactory,
    RecipientFactory,
    SenderAccountFactory,
    SendRecordFactory,
    SequenceStepFactory,
)
from campaigns.tests.scenarios import campaign_scenario
from emailsys.live import live_current, live_flush
from emailsys.testing import RecordingSmtpServer

pytestmark = pytest.mark.django_db

FRAGMENT_ROOT = re.compile(r'^<(\w+) id="(?P<id>[^"]+)" data-live-key="(?P<key>[^"]+)" data-live-v="(?P<v>\d+)"')


def version_of(model, pk: int) -> int:
    return model.objects.values_list("live_version", flat=True).get(pk=pk)


def assert_contract(fragments: dict[str, str], key: str, version: int) -> None:
    """Each fragment is one element named by its id, carrying the key and the version (live.js swaps it)."""
    for element_id, html in fragments.items():
        root = FRAGMENT_ROOT.match(html.strip())
        assert root, html[:120]
        assert (root["id"], root["key"], int(root["v"])) == (element_id, key, version)
        assert element_id.startswith(f"{key}-")
        assert "style=" not in html and "<script" not in html  # the CSP refuses both


@pytest.fixture
def busy_campaign(now):
    """Two steps with sends in every column, a replied and a stopped lead, 25 activities."""
    campaign = CampaignFactory(name="Spring", time_zone="Europe/Berlin", status=Campaign.Status.ACTIVE)
    step_1, step_2 = SequenceStepFactory(campaign=campaign, order=1), SequenceStepFactory(campaign=campaign, order=2)
    due_soon = LeadFactory(campaign=campaign, next_due_at=NOW + timedelta(minutes=5))
    LeadFactory(campaign=campaign, next_due_at=NOW + timedelta(hours=5), current_step=2)
    stopped = LeadFactory(campaign=campaign, state=Lead.State.STOPPED, next_due_at=None)
    RecipientFactory(lead=stopped, status="replied")
    LeadFactory(campaign=campaign, state=Lead.State.FINISHED, next_due_at=None)
    for state in ("sent", "sent", "claimed", "handed_over", "deferred", "failed", "bounced", "unknown"):
        recipient = RecipientFactory(lead=due_soon)
        SendRecordFactory(recipient=recipient, step=step_1, state=state, sent_at=NOW if state == "sent" else None)
    SendRecordFactory(recipient=RecipientFactory(lead=due_soon), step=step_2, state="sent", sent_at=NOW)
    for index in range(25):
        ActivityFactory(campaign=campaign, lead=due_soon, message=f"event {index}",
                        created_at=NOW - timedelta(minutes=25 - index))  # fmt: skip
    return campaign


def test_a_campaign_snapshot_counts_each_steps_sends_by_column_in_two_statements(
    busy_campaign, django_assert_max_num_queries
) -> None:
    with django_assert_max_num_queries(2):
        data = campaign_snapshot(campaign_id=busy_campaign.pk)

    assert data["status"] == "active" and data["status_label"] == "Active"
    step_1, step_2 = data["steps"]
    assert {column: step_1[column] for column in ("sent", "queued", "deferred", "failed", "bounced", "unknown")} == {
        "sent": 2, "queued": 2, "deferred": 1, "failed": 1, "bounced": 1, "unknown": 1,
    }  # fmt: skip
    assert step_2["sent"] == 1 and step_2["queued"] == 0
    assert data["totals"]["sent"] == 3 and data["unknown"] == 1 and data["sent_today"] == 3
    assert data["leads"] == {"total": 4, "in_progress": 2, "finished": 1, "stopped": 1, "replied": 1}
    assert data["next_due_at"] == (NOW + timedelta(minutes=5)).isoformat()
    assert len(data["activities"]) == 20
    assert [activity["message"] for activity in data["activities"][:2]] == ["event 24", "event 23"]  # newest first


def test_a_campaign_snapshot_of_a_deleted_campaign_is_none() -> None:
    assert campaign_snapshot(campaign_id=987654) is None
    assert live_current("campaign", 987654) is None


def test_the_campaign_fragments_follow_the_page_contract_and_show_the_counts(busy_campaign) -> None:
    payload = live_current("campaign", busy_campaign.pk)
    key = f"campaign-{busy_campaign.pk}"
    fragments = payload["fragments"]

    assert_contract(fragments, key, busy_campaign.live_version)
    assert set(fragments) == {
        f"{key}-{part}"
        for part in (
            "status",
            "in-progress",
            "finished",
            "stopped",
            "sent-today",
            "unknown",
            "progress",
            "panel",
            "activity",
        )
    }
    assert ">Active<" in fragments[f"{key}-status"]
    assert 'max="4" value="2"' in fragments[f"{key}-progress"]  # finished + stopped of all leads
    assert "state__exact=unknown" in fragments[f"{key}-unknown"]
    panel = fragments[f"{key}-panel"]
    assert panel.count("<tr>") == 4  # header, two steps, the totals
    assert "Mar 10, 13:05:00" in panel  # next due, in the campaign's time zone (Berlin, UTC+1)
    assert fragments[f"{key}-activity"].count("<li") == 20


@pytest.fixture
def used_account(now):
    account = SenderAccountFactory(daily_limit=10, time_zone="UTC", status=SenderAccount.Status.PAUSED,
                                   status_reason="535 authentication failed", consecutive_failures=5)  # fmt: skip
    AccountDailyUsageFactory(account=account, day=NOW.date(), reserved=10)
    SendRecordFactory(account=account, state="sent", sent_at=NOW - timedelta(minutes=1))
    return account


def test_an_account_snapshot_shows_todays_usage_status_and_pause_reason_in_two_queries(
    used_account, django_assert_max_num_queries
) -> None:
    with django_assert_max_num_queries(2):
        data = account_snapshot(account_id=used_account.pk)

    assert {name: data[name] for name in ("reserved_today", "sent_today", "daily_limit", "remaining_today")} == {
        "reserved_today": 10, "sent_today": 1, "daily_limit": 10, "remaining_today": 0,
    }  # fmt: skip
    assert data["status"] == "paused" and data["status_reason"] == "535 authentication failed"
    assert data["consecutive_failures"] == 5
    assert data["next_available_at"] == (NOW.replace(hour=0) + timedelta(days=1)).isoformat()  # limit used up
    assert account_snapshot(account_id=987654) is None


def test_the_account_fragments_follow_the_page_contract(used_account) -> None:
    payload = live_current("account", used_account.pk)
    key = f"account-{used_account.pk}"
    fragments = payload["fragments"]

    assert_contract(fragments, key, used_account.live_version)
    assert set(fragments) == {f"{key}-{part}" for part in ("status", "usage", "sent-today", "next", "panel")}
    assert "535 authentication failed" in fragments[f"{key}-status"]
    assert 'max="10" value="10"' in fragments[f"{key}-usage"]
    assert "not while paused" in fragments[f"{key}-next"]


# --- who announces ---------------------------------------------------------------------------------------------


def test_campaign_status_changes_bump_the_version_in_their_transaction(django_capture_on_commit_callbacks) -> None:
    campaign = CampaignFactory(status=Campaign.Status.DRAFT)
    CampaignAccountFactory(campaign=campaign)
    SequenceStepFactory(campaign=campaign)
    with django_capture_on_commit_callbacks() as published:
        campaign_set_status(campaign=campaign, status=Campaign.Status.ACTIVE)
    assert version_of(Campaign, campaign.pk) == 1
    assert published, "the message goes out on commit"

    campaign_set_status(campaign=campaign, status=Campaign.Status.ACTIVE)  # no change: no message
    assert version_of(Campaign, campaign.pk) == 1
    campaign_set_status(campaign=campaign, status=Campaign.Status.PAUSED)
    assert version_of(Campaign, campaign.pk) == 2


def test_a_campaign_completing_when_its_last_lead_finishes_is_announced() -> None:
    campaign = CampaignFactory(status=Campaign.Status.ACTIVE)
    LeadFactory(campaign=campaign, state=Lead.State.FINISHED)
    assert campaign_complete_if_done(campaign_id=campaign.pk)
    assert version_of(Campaign, campaign.pk) >= 1
    assert live_current("campaign", campaign.pk)["data"]["status"] == "completed"


def test_a_lead_stopped_or_a_reply_is_announced_on_its_campaign() -> None:
    campaign = CampaignFactory(stop_on_reply=False)
    lead = LeadFactory(campaign=campaign)
    recipient = RecipientFactory(lead=lead)
    assert recipient_mark_replied(recipient=recipient)
    assert version_of(Campaign, campaign.pk) == 1
    assert leads_stop(leads=Lead.objects.filter(pk=lead.pk), reason="stopped by test") == 1
    assert version_of(Campaign, campaign.pk) == 2
    data = live_current("campaign", campaign.pk)["data"]
    assert data["leads"]["replied"] == 1 and data["leads"]["stopped"] == 1


def test_account_pause_resume_reset_and_a_pausing_failure_are_announced() -> None:
    account = SenderAccountFactory()
    account_set_status(account=account, status=SenderAccount.Status.PAUSED, reason="by test")
    assert version_of(SenderAccount, account.pk) == 1
    account_set_status(account=account, status=SenderAccount.Status.ACTIVE)
    account_reset_limits(account=account)
    assert version_of(SenderAccount, account.pk) == 3
    assert account_record_failure(account_id=account.pk, reason="535 bad login", pause_now=True)
    assert version_of(SenderAccount, account.pk) == 4
    assert live_current("account", account.pk)["data"]["status_reason"] == "535 bad login"


@pytest.mark.django_db(transaction=True)
def test_sends_mark_their_campaign_and_accounts_and_a_flush_publishes_the_final_counts() -> None:
    """The hot path only marks (committed sends, coalesced); `live_flush` publishes what is marked."""
    with RecordingSmtpServer() as smtp:
        scenario = campaign_scenario(smtp_port=smtp.port, accounts=2, daily_limit=100, leads=6,
                                     recipients_per_lead=1, steps=1)  # fmt: skip
        before = {account.pk: version_of(SenderAccount, account.pk) for account in scenario.accounts}
        sessions = SmtpSessions()
        try:
            lead_batch_send(lead_ids=[lead.pk for lead in scenario.leads], sessions=sessions)
        finally:
            sessions.close()
        live_flush()

    assert len(smtp.snapshot()) == 6
    assert version_of(Campaign, scenario.campaign.pk) >= 1
    used = {record_account for record_account in scenario.campaign.send_records.values_list("account_id", flat=True)}
    assert all(version_of(SenderAccount, pk) > before[pk] for pk in used)
    data = live_current("campaign", scenario.campaign.pk)["data"]
    assert data["totals"]["sent"] == 6 and data["status"] == "completed"
    assert Activity.objects.filter(campaign=scenario.campaign, kind=Activity.Kind.SENT).count() == 6


def test_the_latest_activities_of_a_campaign_are_read_from_their_index(busy_campaign) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for method in ("seqscan", "bitmapscan", "sort"):  # what a large table would rule out: the index can serve
            cursor.execute(f"SET LOCAL enable_{method} = off")
        cursor.execute(
            "EXPLAIN SELECT * FROM campaigns_activity WHERE campaign_id = %s "
            "ORDER BY created_at DESC, id DESC LIMIT 20",
            [busy_campaign.pk],
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "activity_campaign_recent" in plan and "Sort" not in plan, plan


def test_a_starting_worker_loads_every_fragment_template_and_the_urls() -> None:
    """`live_renderers_warm` runs on Celery's worker_init; its list names every campaign and account fragment."""
    from celery.signals import worker_init

    from campaigns.services.live import LIVE_TEMPLATES, live_renderers_warm
    from emailsys.testing import BASE_DIR

    shipped = {path.stem for pattern in ("campaign_*.html", "account_*.html")
               for path in (BASE_DIR / "templates" / "live").glob(pattern)}  # fmt: skip
    assert set(LIVE_TEMPLATES) == shipped
    assert any("campaigns.live_renderers_warm" in str(lookup) for lookup, _ in worker_init.receivers)
    live_renderers_warm()  # raises if a template or the admin URL is missing
