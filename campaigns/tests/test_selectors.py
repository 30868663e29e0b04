from datetime import date, timedelta

import pytest
from django.db import connection

from campaigns.models import Campaign, Lead
from campaigns.selectors import account_stats, campaign_list, campaign_progress, lead_details, lead_list_due
from campaigns.tests.conftest import NOW
from campaigns.tests.factories import (
    AccountDailyUsageFactory,
    CampaignAccountFactory,
    CampaignFactory,
    LeadFactory,
    RecipientFactory,
    SenderAccountFactory,
    SendRecordFactory,
    SequenceStepFactory,
)

pytestmark = pytest.mark.django_db


def test_campaign_progress_counts_leads_recipients_and_sends_in_one_statement(now, django_assert_num_queries):
    campaign = CampaignFactory(time_zone="America/New_York")  # 12:00 UTC is 08:00 EDT: the day began at 04:00 UTC
    step_1, step_2 = SequenceStepFactory(campaign=campaign), SequenceStepFactory(campaign=campaign)
    at_step_2 = LeadFactory(campaign=campaign, current_step=2, next_due_at=NOW + timedelta(hours=2))
    LeadFactory(campaign=campaign, current_step=1, next_due_at=NOW + timedelta(hours=1))
    LeadFactory(campaign=campaign, current_step=2, state=Lead.State.FINISHED)
    stopped = LeadFactory(campaign=campaign, current_step=1, state=Lead.State.STOPPED, next_due_at=NOW)
    LeadFactory(current_step=1)  # another campaign
    RecipientFactory(lead=stopped, status="replied")
    today = RecipientFactory(lead=at_step_2, status="contacted")
    yesterday = RecipientFactory(lead=at_step_2, status="contacted")
    RecipientFactory(lead=at_step_2, status="bounced")
    SendRecordFactory(recipient=today, step=step_1, state="sent", sent_at=NOW - timedelta(hours=6))
    SendRecordFactory(recipient=yesterday, step=step_1, state="sent", sent_at=NOW - timedelta(hours=9))
    SendRecordFactory(recipient=today, step=step_2, state="failed")

    with django_assert_num_queries(1):
        progress = campaign_progress(campaign=campaign)

    assert progress["leads"] == {"total": 4, "in_progress": 2, "finished": 1, "stopped": 1, "replied": 1}
    assert progress["next_due_at"] == NOW + timedelta(hours=1)  # of in-progress leads only
    assert progress["leads_by_step"] == {1: 2, 2: 2}
    assert progress["recipients"] == {"not_contacted": 0, "contacted": 2, "replied": 1, "bounced": 1,
                                      "unsubscribed": 0}  # fmt: skip
    assert progress["send_records"]["sent"] == 2 and progress["send_records"]["failed"] == 1
    assert progress["send_records"]["claimed"] == 0
    assert progress["sends_by_step"][1]["sent"] == 2 and progress["sends_by_step"][2]["failed"] == 1
    assert progress["sent_today"] == 1


def test_due_leads_are_in_progress_leads_of_active_campaigns_oldest_first(now):
    active = CampaignFactory(status=Campaign.Status.ACTIVE)
    paused = CampaignFactory(status=Campaign.Status.PAUSED)
    older = LeadFactory(campaign=active, next_due_at=NOW - timedelta(hours=2))
    newer = LeadFactory(campaign=active, next_due_at=NOW)
    LeadFactory(campaign=active, next_due_at=NOW + timedelta(seconds=1))  # not yet
    LeadFactory(campaign=active, next_due_at=None)
    LeadFactory(campaign=active, next_due_at=NOW - timedelta(days=1), state=Lead.State.FINISHED)
    LeadFactory(campaign=paused, next_due_at=NOW - timedelta(days=1))

    assert list(lead_list_due(now=NOW)) == [older, newer]
    assert list(lead_list_due(now=NOW, limit=1)) == [older]
    assert list(lead_list_due(now=NOW, campaign_id=paused.pk)) == []


def test_due_leads_query_can_use_the_partial_in_progress_index(now):
    LeadFactory(campaign=CampaignFactory(status=Campaign.Status.ACTIVE))
    sql, params = lead_list_due(now=NOW).query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "lead_due_in_progress" in plan


def test_account_stats_count_today_in_the_accounts_time_zone(now):
    account = SenderAccountFactory(time_zone="Pacific/Kiritimati", daily_limit=50,
                                   next_available_at=NOW + timedelta(minutes=4))  # fmt: skip
    AccountDailyUsageFactory(account=account, day=date(2025, 3, 11), reserved=45)  # local today (UTC+14)
    AccountDailyUsageFactory(account=account, day=date(2025, 3, 10), reserved=50)
    SendRecordFactory(account=account, state="sent", sent_at=NOW - timedelta(hours=1))
    SendRecordFactory(account=account, state="sent", sent_at=NOW - timedelta(hours=11))  # local yesterday
    SendRecordFactory(account=account, state="failed")
    SendRecordFactory(state="sent")  # another account

    stats = account_stats(account=account, now=NOW)

    assert (stats["day"], stats["reserved_today"], stats["daily_limit"], stats["remaining_today"]) == (
        date(2025, 3, 11), 45, 50, 5,
    )  # fmt: skip
    assert stats["next_available_at"] == NOW + timedelta(minutes=4)
    assert (stats["sends"]["sent"], stats["sends"]["failed"], stats["sent_today"]) == (2, 1, 1)
    assert stats["last_sent_at"] == NOW - timedelta(hours=1)


def test_account_stats_of_an_unused_account_show_the_whole_limit_remaining(now):
    stats = account_stats(account=SenderAccountFactory(daily_limit=30), now=NOW)
    assert (stats["reserved_today"], stats["remaining_today"], stats["last_sent_at"]) == (0, 30, None)


def test_lead_details_list_recipients_in_order_with_their_sends_per_step(django_assert_max_num_queries):
    campaign = CampaignFactory()
    step_1, step_2 = SequenceStepFactory(campaign=campaign), SequenceStepFactory(campaign=campaign)
    lead = LeadFactory(campaign=campaign)
    first, second = RecipientFactory(lead=lead), RecipientFactory(lead=lead)
    sent = SendRecordFactory(recipient=first, step=step_1, state="sent")
    failed = SendRecordFactory(recipient=first, step=step_2, state="failed")

    with django_assert_max_num_queries(4):
        details = lead_details(lead=lead)
        assert [step.template.name for step in details["steps"]] == [step_1.template.name, step_2.template.name]

    assert details["lead"] == lead and details["campaign"] == campaign
    assert [item["recipient"] for item in details["recipients"]] == [first, second]
    assert details["recipients"][0]["sends_by_step"] == {1: sent, 2: failed}
    assert details["recipients"][1]["sends_by_step"] == {}


def test_campaign_list_counts_each_relation_without_multiplying_them():
    campaign = CampaignFactory()
    for _ in range(3):
        SequenceStepFactory(campaign=campaign)
    CampaignAccountFactory(campaign=campaign), CampaignAccountFactory(campaign=campaign)
    LeadFactory(campaign=campaign), LeadFactory(campaign=campaign, state=Lead.State.FINISHED)
    empty = CampaignFactory()

    rows = {c.pk: (c.step_count, c.account_count, c.lead_count, c.leads_in_progress) for c in campaign_list()}

    assert rows == {campaign.pk: (3, 2, 2, 1), empty.pk: (0, 0, 0, 0)}
