"""/metrics' business numbers move while a real campaign sends: a Celery worker on Redis runs the dispatcher and
the send batches against an SMTP server on loopback that defers one recipient and bounces another."""

import pytest
from celery.contrib.testing.worker import start_worker

from campaigns.models import Recipient
from campaigns.services.recipients import recipient_mark_replied
from campaigns.tasks import dispatch_due_task
from campaigns.tests.scenarios import campaign_scenario
from emailsys.celery import app as celery_app
from emailsys.testing import RecordingSmtpServer, wait_until
from emailsys.tests.test_metrics import scrape

pytestmark = pytest.mark.django_db(transaction=True)


def campaign_sample(samples: dict, name: str, campaign, **labels: str) -> float:
    key = (name, tuple(sorted({"campaign_id": str(campaign.id), "campaign": campaign.name, **labels}.items())))
    return samples[key]


def account_sample(samples: dict, name: str, account, **labels: str) -> float:
    return samples[(name, tuple(sorted({"account": account.email, **labels}.items())))]


@pytest.mark.timeout(90)
def test_metrics_follow_a_campaign_that_sends_defers_bounces_and_gets_a_reply(client) -> None:
    with RecordingSmtpServer() as smtp:
        smtp.rcpt_replies["r0.lead0@customer.test"] = "550 5.1.1 No such user"
        smtp.rcpt_replies["r1.lead0@customer.test"] = "451 4.7.1 Try again later"
        scenario = campaign_scenario(
            smtp_port=smtp.port, name="Metrics", accounts=2, daily_limit=50, leads=3, recipients_per_lead=2, steps=2
        )
        campaign = scenario.campaign
        before = scrape(client)
        assert campaign_sample(before, "emailsys_campaign_leads_due", campaign) == 3
        assert campaign_sample(before, "emailsys_campaign_oldest_due_age_seconds", campaign) >= 0
        assert campaign_sample(before, "emailsys_campaign_emails", campaign, state="sent") == 0
        for account in scenario.accounts:
            assert account_sample(before, "emailsys_account_daily_limit", account) == 50
            assert account_sample(before, "emailsys_account_status", account, status="active") == 1
            assert account_sample(before, "emailsys_account_reserved_today", account) == 0

        with start_worker(celery_app, pool="solo", perform_ping_check=False, queues=["default", "sending"]):
            dispatch_due_task.delay()

            def settled() -> dict | None:
                samples = scrape(client)
                sent = campaign_sample(samples, "emailsys_campaign_emails", campaign, state="sent")
                return samples if sent >= 4 and len(smtp.snapshot()) >= 4 else None

            after = wait_until(settled, timeout=45, interval=0.3, what="four sends on /metrics")

        assert len(smtp.snapshot()) == 4  # 3 leads × 2 recipients, less the bounced and the deferred one
        emails = {
            state: campaign_sample(after, "emailsys_campaign_emails", campaign, state=state)
            for state in ("sent", "deferred", "bounced", "failed", "unknown")
        }
        assert emails == {"sent": 4, "deferred": 1, "bounced": 1, "failed": 0, "unknown": 0}
        per_account = {
            state: sum(account_sample(after, "emailsys_account_emails", a, state=state) for a in scenario.accounts)
            for state in emails
        }
        assert per_account == emails
        reserved = sum(account_sample(after, "emailsys_account_reserved_today", a) for a in scenario.accounts)
        sent_today = sum(account_sample(after, "emailsys_account_sent_today", a) for a in scenario.accounts)
        assert (reserved >= 4, sent_today) == (True, 4)
        assert campaign_sample(after, "emailsys_campaign_recipients", campaign, status="bounced") == 1
        assert campaign_sample(after, "emailsys_campaign_recipients", campaign, status="contacted") == 4
        # Step 2 of the two leads whose step 1 went out is due at once (no delay); the deferred lead waits.
        wait_until(
            lambda: campaign_sample(scrape(client), "emailsys_campaign_leads_due", campaign) == 2,
            timeout=10,
            what="two leads due for step 2",
        )

    replier = Recipient.objects.get(email="r0.lead1@customer.test")
    recipient_mark_replied(recipient=replier, source="test")
    replied = scrape(client)
    assert campaign_sample(replied, "emailsys_campaign_recipients", campaign, status="replied") == 1
    assert campaign_sample(replied, "emailsys_campaign_recipients", campaign, status="contacted") == 3
