"""The activity log: one row per send, skip, failure and status change, with structured detail."""

from campaigns.models import Activity, Campaign, Lead, Recipient, SenderAccount
from campaigns.services.live import campaign_live_progress
from emailsys import clock
from emailsys.live import live_progress


def activity_record(
    *,
    kind: str,
    campaign: Campaign | int | None = None,
    lead: Lead | int | None = None,
    recipient: Recipient | int | None = None,
    account: SenderAccount | int | None = None,
    step_order: int | None = None,
    message: str = "",
    detail: dict | None = None,
) -> Activity:
    """Accepts instances or ids (callers often hold only ids). Never put secrets in `detail`."""
    campaign_live_progress(getattr(campaign, "pk", campaign))  # the campaign page's activity stream, coalesced

    def pk(value):
        return value.pk if hasattr(value, "pk") else value

    live_progress("dashboard", 0)  # the dashboard's activity stream and counts (emailsys.dashboard), coalesced
    return Activity.objects.create(
        created_at=clock.now(),
        kind=kind,
        campaign_id=pk(campaign),
        lead_id=pk(lead),
        recipient_id=pk(recipient),
        account_id=pk(account),
        step_order=step_order,
        message=message,
        detail=detail or {},
    )
