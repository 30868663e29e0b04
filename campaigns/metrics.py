"""Campaign business metrics on /metrics, read from PostgreSQL when Prometheus scrapes (emailsys.metrics and
workorders.metrics serve the task, queue and work-order ones; processing.metrics the inbound counts).

Why read the tables at scrape time instead of counting in the send path: the send records, recipients, leads and
daily usage rows already are the truth, shared by every worker and surviving restarts; a counter kept per process
would reset with it and disagree with the admin. Each family is one grouped query (or the account list's), so a
scrape costs a few index or sequential reads and its size is bounded by the number of accounts and campaigns,
never by leads or emails. Labels: `account` (the sender's address), `campaign_id` and `campaign` (its name).

The values are current counts, hence gauges: a deferred send becomes sent, an unknown one is resolved, a sent one
can bounce later. Sends per minute: `deriv(emailsys_account_emails{state="sent"}[5m]) * 60`, or
`delta(...[1h])` for the last hour. None of these raises: a database outage gives a scrape without them.
"""

import logging
from collections import defaultdict
from collections.abc import Iterator

from django.db.models import Count, Min
from django.db.models.functions import Coalesce
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector

from emailsys import clock

logger = logging.getLogger(__name__)

CAMPAIGN_LABELS = ["campaign_id", "campaign"]
# Help texts; README "Metrics, dashboard and logs" lists each (emailsys/tests/test_grafana_dashboard.py checks).
FAMILIES = {
    "emailsys_campaign_emails": "Send records per campaign by state (sent, deferred: waiting to retry, bounced, "
    "failed, unknown: outcome unknown after a crash, skipped, claimed/handed_over: in flight).",
    "emailsys_account_emails": "Send records per sender account by state (as emailsys_campaign_emails).",
    "emailsys_campaign_recipients": "Recipients per campaign by status (replied, bounced, unsubscribed, contacted, "
    "not_contacted).",
    "emailsys_account_reserved_today": "Sends reserved on the account's local day: what its daily limit is checked "
    "against.",
    "emailsys_account_sent_today": "Emails the account delivered since its local midnight (campaigns and mailings).",
    "emailsys_account_daily_limit": "The account's daily limit.",
    "emailsys_account_status": "1 for the account's current status (active, paused, disabled), 0 for the others.",
    "emailsys_campaign_leads_due": "In-progress leads of active campaigns whose next step is due now.",
    "emailsys_campaign_oldest_due_age_seconds": "How long the longest-waiting due lead of an active campaign has "
    "been due (0 when none is).",
    "emailsys_campaigns": "Campaigns by status.",
}


def _family(name: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, FAMILIES[name], labels=labels)


class CampaignCollector(Collector):
    def describe(self) -> list:
        """Names only: registering must not touch the database."""
        return [GaugeMetricFamily(name, "") for name in FAMILIES]

    def collect(self) -> Iterator:
        for part in (self._campaigns_and_emails, self._recipients, self._accounts, self._due):
            try:
                yield from part()
            except Exception as error:  # noqa: BLE001 - a scrape during a database outage still answers
                logger.warning("could not read campaign metrics (%s): %s", part.__name__, type(error).__name__)

    def _campaigns_and_emails(self) -> Iterator[GaugeMetricFamily]:
        from campaigns.models import Campaign, SenderAccount, SendRecord

        campaigns = dict(Campaign.objects.values_list("id", "name"))
        by_status = dict(Campaign.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
        statuses = _family("emailsys_campaigns", ["status"])
        for status in Campaign.Status.values:
            statuses.add_metric([status], float(by_status.get(status, 0)))
        yield statuses

        accounts = dict(SenderAccount.objects.values_list("id", "email"))
        rows = SendRecord.objects.order_by().values_list("campaign_id", "account_id", "state").annotate(n=Count("id"))
        per_campaign: dict[int, dict[str, int]] = defaultdict(dict)
        per_account: dict[int, dict[str, int]] = defaultdict(dict)
        for campaign_id, account_id, state, count in rows:
            per_campaign[campaign_id][state] = per_campaign[campaign_id].get(state, 0) + count
            if account_id is not None:
                per_account[account_id][state] = per_account[account_id].get(state, 0) + count
        by_campaign = _family("emailsys_campaign_emails", [*CAMPAIGN_LABELS, "state"])
        for campaign_id, name in sorted(campaigns.items()):
            for state in SendRecord.State.values:
                count = per_campaign[campaign_id].get(state, 0)
                by_campaign.add_metric([str(campaign_id), name, state], float(count))
        yield by_campaign
        by_account = _family("emailsys_account_emails", ["account", "state"])
        for account_id, email in sorted(accounts.items(), key=lambda item: item[1]):
            for state in SendRecord.State.values:
                by_account.add_metric([email, state], float(per_account[account_id].get(state, 0)))
        yield by_account

    def _recipients(self) -> Iterator[GaugeMetricFamily]:
        from campaigns.models import Recipient

        rows = (
            Recipient.objects.order_by()
            .values_list("lead__campaign_id", "lead__campaign__name", "status")
            .annotate(n=Count("id"))
        )
        counts: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)
        for campaign_id, name, status, count in rows:
            counts[(campaign_id, name)][status] = count
        family = _family("emailsys_campaign_recipients", [*CAMPAIGN_LABELS, "status"])
        for (campaign_id, name), by_status in sorted(counts.items()):
            for status in Recipient.Status.values:
                family.add_metric([str(campaign_id), name, status], float(by_status.get(status, 0)))
        yield family

    def _accounts(self) -> Iterator[GaugeMetricFamily]:
        from campaigns.models import SenderAccount
        from campaigns.selectors import account_list

        reserved = _family("emailsys_account_reserved_today", ["account"])
        sent = _family("emailsys_account_sent_today", ["account"])
        limit = _family("emailsys_account_daily_limit", ["account"])
        status = _family("emailsys_account_status", ["account", "status"])
        for row in account_list().values("email", "daily_limit", "status", "reserved_today", "sent_today"):
            reserved.add_metric([row["email"]], float(row["reserved_today"]))
            sent.add_metric([row["email"]], float(row["sent_today"]))
            limit.add_metric([row["email"]], float(row["daily_limit"]))
            for value in SenderAccount.Status.values:
                status.add_metric([row["email"], value], 1.0 if row["status"] == value else 0.0)
        yield from (reserved, sent, limit, status)

    def _due(self) -> Iterator[GaugeMetricFamily]:
        """The dispatcher's backlog, as campaigns.selectors.lead_list_due defines it (the partial index
        lead_due_in_progress serves the filter); the waiting time counts from when the step first became due."""
        from campaigns.models import Campaign, Lead

        now = clock.now()
        rows = (
            Lead.objects.filter(
                state=Lead.State.IN_PROGRESS, next_due_at__lte=now, campaign__status=Campaign.Status.ACTIVE
            )
            .order_by()
            .values_list("campaign_id")
            .annotate(n=Count("id"), since=Min(Coalesce("step_due_at", "next_due_at")))
        )
        due = {campaign_id: (count, since) for campaign_id, count, since in rows}
        active = Campaign.objects.filter(status=Campaign.Status.ACTIVE).values_list("id", "name").order_by("id")
        leads = _family("emailsys_campaign_leads_due", CAMPAIGN_LABELS)
        oldest = _family("emailsys_campaign_oldest_due_age_seconds", CAMPAIGN_LABELS)
        for campaign_id, name in active:
            count, since = due.get(campaign_id, (0, None))
            leads.add_metric([str(campaign_id), name], float(count))
            age = max(0.0, (now - since).total_seconds()) if since is not None else 0.0
            oldest.add_metric([str(campaign_id), name], round(age, 3))
        yield leads
        yield oldest


_collector: CampaignCollector | None = None


def register_campaign_collector() -> None:
    """From CampaignsConfig.ready(): once per process."""
    global _collector
    if _collector is None:
        _collector = CampaignCollector()
        REGISTRY.register(_collector)
