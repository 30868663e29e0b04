"""The arbiter's holds: a batch's reservation counts against the account's day at once, and what no send row
claimed within the lease comes back (a worker killed after reserving), exactly once, never more than the limit.
The kill -9 itself: test_campaign_crashes.py, test_kill_9_after_reserving_a_batch_still_sends_the_full_daily_limit…
"""

from datetime import UTC, datetime, timedelta

import pytest

from campaigns.models import AccountDailyUsage
from campaigns.services.throttling import (
    NoAccount,
    accounts_reserve,
    reservation_holds_take,
    reservation_release_unclaimed,
    send_lease,
)
from campaigns.tests.scenarios import campaign_scenario
from emailsys.testing import free_port

pytestmark = pytest.mark.django_db
NOON = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)  # leases never cross midnight


def reserved_today(scenario) -> int:
    return AccountDailyUsage.objects.get(account=scenario.accounts[0], day=NOON.date()).reserved


def test_sends_reserved_but_never_claimed_come_back_after_the_lease_and_only_what_no_row_claimed() -> None:
    scenario = campaign_scenario(smtp_port=free_port(), accounts=1, daily_limit=5, leads=0)
    campaign = scenario.campaign.id
    dying = accounts_reserve(campaign_id=campaign, count=5, now=NOON)
    assert len(dying) == 5
    assert reservation_holds_take(reservations=dying[:2], now=NOON)  # two send rows claimed, then kill -9

    refused = accounts_reserve(campaign_id=campaign, count=5, now=NOON + timedelta(seconds=1))
    assert isinstance(refused, NoAccount)  # limit reached: the dying batch's lease has not passed yet
    assert refused.retry_at == NOON + send_lease()  # looked at again when it passes, not at midnight
    assert "held in flight" in refused.reason

    later = NOON + send_lease() + timedelta(seconds=1)
    again = accounts_reserve(campaign_id=campaign, count=5, now=later)
    assert len(again) == 3  # the three no row claimed; the two claimed rows keep counting
    assert reserved_today(scenario) == 5
    assert isinstance(accounts_reserve(campaign_id=campaign, count=1, now=later), NoAccount)


def test_a_slow_batch_whose_hold_was_given_back_can_neither_claim_nor_give_back_twice() -> None:
    scenario = campaign_scenario(smtp_port=free_port(), accounts=1, daily_limit=2, leads=0)
    campaign = scenario.campaign.id
    slow = accounts_reserve(campaign_id=campaign, count=2, now=NOON)
    later = NOON + send_lease() + timedelta(seconds=1)
    other = accounts_reserve(campaign_id=campaign, count=2, now=later)  # takes the slow batch's room
    assert len(other) == 2 and reserved_today(scenario) == 2

    assert not reservation_holds_take(reservations=slow[:1], now=later)  # its claim rolls back: never sent
    reservation_release_unclaimed(reservation=slow[1])
    assert reserved_today(scenario) == 2  # nothing given back twice: the other batch's count stands

    assert reservation_holds_take(reservations=other[:1], now=later)
    reservation_release_unclaimed(reservation=other[1])  # given up before its claim: comes back at once
    assert reserved_today(scenario) == 1
    assert not reservation_holds_take(reservations=other[1:], now=later)  # and cannot be used after that
