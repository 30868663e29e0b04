"""Sends that are not the campaign's real sends: dry runs (rendered and stored, nothing sent) and test sends
to an operator's address. Neither uses the arbiter, advances a lead or blocks the real send."""

from django.db import transaction

from campaigns.models import (
    Activity,
    Campaign,
    DryRunRecord,
    Lead,
    OperatorTestSend,
    Recipient,
    SenderAccount,
    SequenceStep,
)
from campaigns.selectors import lead_list_due
from campaigns.services.activities import activity_record
from campaigns.services.delivery import deliver_once
from campaigns.services.outcomes import Outcome
from campaigns.services.templating import (
    RenderedEmail,
    TemplateRenderError,
    message_build,
    message_id_new,
    step_render,
    template_context,
    template_render,
)
from campaigns.services.unsubscribes import recipient_unsubscribe_url
from emailsys import clock


def _first_account(campaign: Campaign) -> SenderAccount | None:
    return campaign.accounts.filter(status=SenderAccount.Status.ACTIVE).order_by("id").first()


def lead_dry_run(*, lead: Lead, account: SenderAccount | None = None) -> list[DryRunRecord]:
    """Renders the lead's current step for each of its recipients and stores what would be sent."""
    campaign = lead.campaign
    step = campaign.steps.select_related("template").filter(order=lead.current_step).first()
    account = account or _first_account(campaign)
    if step is None or account is None:
        return []
    now = clock.now()
    records = []
    for recipient in lead.recipients.order_by("position"):
        subject, message_text, error = "", "", ""
        try:
            rendered = step_render(step=step, recipient=recipient, account=account)
            message = message_build(
                rendered=rendered,
                account=account,
                to_email=recipient.email,
                to_name=recipient.name,
                message_id=message_id_new(account=account),
                date=now,
                unsubscribe_url=recipient_unsubscribe_url(recipient),
            )
            subject, message_text = rendered.subject, message.as_string()
        except (TemplateRenderError, ValueError) as failure:
            error = str(failure)
        records.append(
            DryRunRecord(
                campaign=campaign,
                recipient=recipient,
                step=step,
                account=account,
                subject=subject,
                message=message_text,
                error=error,
            )
        )
    with transaction.atomic():
        DryRunRecord.objects.bulk_create(records)
        activity_record(
            kind=Activity.Kind.DRY_RUN,
            campaign=campaign,
            lead=lead,
            step_order=step.order,
            message=f"dry run of step {step.order} for {len(records)} recipient(s)",
            detail={"errors": sum(1 for r in records if r.error)},
        )
    return records


def campaign_dry_run(*, campaign_id: int | None = None, limit: int = 100) -> list[DryRunRecord]:
    """Dry-runs the leads that are due now, without claiming them."""
    records: list[DryRunRecord] = []
    for lead in lead_list_due(now=clock.now(), campaign_id=campaign_id, limit=limit).select_related("campaign"):
        records.extend(lead_dry_run(lead=lead))
    return records


def _sample_recipient(step: SequenceStep, lead: Lead | None) -> Recipient:
    if lead is not None and (first := lead.recipients.order_by("position").first()):
        return first
    # No lead chosen: the template's own defaults show, as for a recipient we know nothing about.
    return Recipient(lead=Lead(campaign=step.campaign, custom_fields={}), position=0, email="test@example.com")


def step_send_test(
    *, step: SequenceStep, to_email: str, account: SenderAccount, lead: Lead | None = None
) -> OperatorTestSend:
    """Sends the step, rendered for `lead`'s first recipient (or with defaults), to `to_email`, marked as a test:
    `[TEST]` in the subject and an X-Emailsys-Test header. It never counts as any recipient's email."""
    recipient = _sample_recipient(step, lead)
    now = clock.now()
    test = OperatorTestSend(step=step, account=account, to_email=to_email, lead=lead)
    try:
        if recipient.pk:
            rendered = step_render(step=step, recipient=recipient, account=account)
        else:
            context = template_context(
                recipient=recipient, account=account, campaign=step.campaign, step_order=step.order, custom_fields={}
            )
            rendered = template_render(template=step.template, context=context, signature=account.signature)
        rendered = RenderedEmail(subject=f"[TEST] {rendered.subject}", text=rendered.text, html=rendered.html)
        message = message_build(
            rendered=rendered,
            account=account,
            to_email=to_email,
            to_name="",
            message_id=message_id_new(account=account),
            date=now,
            unsubscribe_url=None,
            extra_headers={"X-Emailsys-Test": f"campaign {step.campaign_id} step {step.order}"},
        )
    except (TemplateRenderError, ValueError) as error:
        test.error = f"template error: {error}"
        test.save()
        return test
    test.subject, test.message, test.message_id = rendered.subject, message.as_string(), message["Message-ID"]
    result = deliver_once(account=account, recipient=to_email, message_bytes=test.message.encode())
    if result.outcome is Outcome.SENT:
        test.sent_at = clock.now()
    else:  # nothing is retried for a test: the server's or the ESP's words say why
        test.error = result.detail
    test.save()
    activity_record(
        kind=Activity.Kind.TEST_SENT,
        campaign=step.campaign_id,
        account=account,
        step_order=step.order,
        message=f"test of step {step.order} to {to_email}: {'sent' if test.sent_at else test.error}",
        detail={"test_send": test.id},
    )
    return test
