"""Sends that are not the campaign's real sends: dry runs (rendered and stored, nothing sent) and test sends
to an operator's address. Neither uses the arbiter, advances a lead or blocks the real send.

Both show what a recipient would get: a threaded step its real `Re:` subject, and the variables that render
empty (a warning: "Ideas for 's team" is worse than no email). A test send or a preview without a lead renders
for the campaign's first lead, or, if it has none, with sample values for every variable, and says which.
"""

from dataclasses import dataclass, field

from django.db import transaction

from audit.actions import AuditAction
from audit.services import audit_active, audit_record
from campaigns.models import (
    Activity,
    Campaign,
    DryRunRecord,
    EmailTemplate,
    Lead,
    OperatorTestSend,
    Recipient,
    SenderAccount,
    SendRecord,
    SequenceStep,
)
from campaigns.selectors import lead_list_due
from campaigns.services.activities import activity_record
from campaigns.services.delivery import deliver_once
from campaigns.services.outcomes import Outcome
from campaigns.services.templating import (
    SAMPLE_ACCOUNT,
    RenderedEmail,
    TemplateRenderError,
    message_build,
    message_id_new,
    sample_recipient,
    step_render,
    template_check,
    template_context,
    template_empty_variables,
    template_render,
    template_sample_context,
)
from campaigns.services.unsubscribes import recipient_unsubscribe_url
from emailsys import clock

SAMPLE_VALUES = "sample values"


@dataclass(frozen=True)
class Preview:
    """One step rendered for one recipient as it would be sent (or why it cannot be)."""

    rendered: RenderedEmail | None
    error: str
    empty_variables: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TestSendResult:
    test: OperatorTestSend
    rendered_for: str  # "lead 12's first recipient (ada@acme.test)" or "sample values"
    empty_variables: list[str]

    @property
    def note(self) -> str:
        """What the operator is told besides sent or failed."""
        note = f"rendered for {self.rendered_for}"
        if self.empty_variables:
            note += f"; renders empty: {', '.join(self.empty_variables)}"
        return note


def template_sample_preview(*, template: EmailTemplate) -> tuple[Preview, dict]:
    """A template (saved or as being edited) rendered with sample values within the render budget, and the
    sample context it used: the admin's preview beside the editor. Syntax errors, unknown filters and render
    failures (budget, undefined) come back as `error` naming the part, never as an exception."""
    problems = template_check(template)
    if problems:
        return Preview(rendered=None, error="; ".join(f"{name}: {text}" for name, text in problems.items())), {}
    context = template_sample_context(template)
    try:
        rendered = template_render(template=template, context=context, signature=SAMPLE_ACCOUNT["signature"])
    except TemplateRenderError as error:
        return Preview(rendered=None, error=str(error)), context
    return Preview(rendered, "", template_empty_variables(template=template, context=context)), context


def preview_recipient(*, step: SequenceStep, lead: Lead | None) -> tuple[Recipient, str]:
    """Whom a test or preview renders for, and how to say so: `lead`'s first recipient, else the campaign's first
    lead's, else a sample recipient (`templating.sample_recipient`, values for every variable)."""
    chosen = lead or step.campaign.leads.filter(recipients__isnull=False).order_by("id").first()
    first = chosen.recipients.order_by("position").first() if chosen is not None else None
    if first is not None:
        return first, f"lead {chosen.id}'s first recipient ({first.email})"
    templates = [earlier.template for earlier in step.campaign.steps.select_related("template").order_by("order")]
    recipient = sample_recipient(campaign=step.campaign, templates=templates or [step.template])
    return recipient, SAMPLE_VALUES if lead is None else f"{SAMPLE_VALUES} (lead {lead.id} has no recipient)"


def _previous_subject(*, step: SequenceStep, recipient: Recipient, account: SenderAccount) -> str | None:
    """What a threaded step replies to: the recipient's last email of an earlier step, as sent (or maybe sent);
    if none was, the earlier steps rendered for the recipient the way they would be."""
    if not step.threaded:
        return None
    if recipient.pk:
        sent = SendRecord.objects.filter(
            recipient=recipient, step__order__lt=step.order, state__in=(SendRecord.State.SENT, SendRecord.State.UNKNOWN)
        ).order_by("step__order")
        if (last := sent.last()) is not None:
            return last.subject
    subject = None
    for earlier in step.campaign.steps.select_related("template").filter(order__lt=step.order).order_by("order"):
        subject = step_render(step=earlier, recipient=recipient, account=account, previous_subject=subject).subject
    return subject


def step_preview(*, step: SequenceStep, recipient: Recipient, account: SenderAccount) -> Preview:
    """The step rendered for `recipient` as a real send would render it (threaded: its `Re:` subject), with the
    variables that render empty. Any failure is the preview's error, never an exception."""
    try:
        previous_subject = _previous_subject(step=step, recipient=recipient, account=account)
        rendered = step_render(step=step, recipient=recipient, account=account, previous_subject=previous_subject)
        context = template_context(recipient=recipient, account=account, campaign=step.campaign, step_order=step.order,
                                   custom_fields=recipient.lead.custom_fields)  # fmt: skip
    except Exception as error:  # noqa: BLE001 - a template's fault is the preview's answer
        return Preview(rendered=None, error=f"template error: {error}")
    return Preview(rendered=rendered, error="", empty_variables=template_empty_variables(template=step.template,
                                                                                         context=context))  # fmt: skip


def _first_account(campaign: Campaign) -> SenderAccount | None:
    return campaign.accounts.filter(status=SenderAccount.Status.ACTIVE).order_by("id").first()


def lead_dry_run(*, lead: Lead, account: SenderAccount | None = None) -> list[DryRunRecord]:
    """Renders the lead's current step for each of its recipients and stores what would be sent; the activity
    lists the variables that render empty, per recipient."""
    campaign = lead.campaign
    step = campaign.steps.select_related("template").filter(order=lead.current_step).first()
    account = account or _first_account(campaign)
    if step is None or account is None:
        return []
    now = clock.now()
    records, empty = [], {}
    for recipient in lead.recipients.order_by("position"):
        subject, message_text, error = "", "", ""
        preview = step_preview(step=step, recipient=recipient, account=account)
        if preview.rendered is None:
            error = preview.error
        else:
            try:
                message = message_build(
                    rendered=preview.rendered,
                    account=account,
                    to_email=recipient.email,
                    to_name=recipient.name,
                    message_id=message_id_new(account=account),
                    date=now,
                    unsubscribe_url=recipient_unsubscribe_url(recipient),
                )
                subject, message_text = preview.rendered.subject, message.as_string()
            except Exception as failure:  # noqa: BLE001 - e.g. an address no message can carry: this one's error
                error = str(failure) or repr(failure)
        if preview.empty_variables:
            empty[recipient.email] = preview.empty_variables
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
    message = f"dry run of step {step.order} for {len(records)} recipient(s)"
    if empty:
        message += "; renders empty: " + "; ".join(f"{email}: {', '.join(names)}" for email, names in empty.items())
    with transaction.atomic():
        DryRunRecord.objects.bulk_create(records)
        activity_record(
            kind=Activity.Kind.DRY_RUN,
            campaign=campaign,
            lead=lead,
            step_order=step.order,
            message=message,
            detail={"errors": sum(1 for r in records if r.error), "empty_variables": empty},
        )
    return records


def campaign_dry_run(*, campaign_id: int | None = None, limit: int = 100) -> list[DryRunRecord]:
    """Dry-runs the leads that are due now, without claiming them."""
    records: list[DryRunRecord] = []
    for lead in lead_list_due(now=clock.now(), campaign_id=campaign_id, limit=limit).select_related("campaign"):
        records.extend(lead_dry_run(lead=lead))
    if campaign_id is not None and audit_active() and (campaign := Campaign.objects.filter(pk=campaign_id).first()):
        audit_record(
            action=AuditAction.CAMPAIGN_DRY_RUN,
            target=campaign,
            detail={"records": len(records), "errors": sum(1 for record in records if record.error)},
        )
    return records


def step_send_test(
    *, step: SequenceStep, to_email: str, account: SenderAccount, lead: Lead | None = None
) -> TestSendResult:
    """Sends the step, rendered as `preview_recipient` chooses (and says), to `to_email`, marked as a test:
    `[TEST]` in the subject and an X-Emailsys-Test header. It never counts as any recipient's email. The activity
    says whom it was rendered for and which variables render empty."""
    recipient, rendered_for = preview_recipient(step=step, lead=lead)
    now = clock.now()
    test = OperatorTestSend(
        step=step, account=account, to_email=to_email, lead=recipient.lead if recipient.pk else None
    )
    preview = step_preview(step=step, recipient=recipient, account=account)
    result = TestSendResult(test=test, rendered_for=rendered_for, empty_variables=preview.empty_variables)
    if preview.rendered is None:
        test.error = preview.error
    else:
        rendered = preview.rendered
        rendered = RenderedEmail(subject=f"[TEST] {rendered.subject}", text=rendered.text, html=rendered.html)
        try:
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
        except Exception as error:  # noqa: BLE001 - nothing is sent; the test says why
            test.error = f"message error: {error or repr(error)}"
        else:
            test.subject, test.message, test.message_id = rendered.subject, message.as_string(), message["Message-ID"]
            delivery = deliver_once(account=account, recipient=to_email, message_bytes=test.message.encode())
            if delivery.outcome is Outcome.SENT:
                test.sent_at = clock.now()
            else:  # nothing is retried for a test: the server's or the ESP's words say why
                test.error = delivery.detail
    test.save()
    activity_record(
        kind=Activity.Kind.TEST_SENT,
        campaign=step.campaign_id,
        account=account,
        step_order=step.order,
        message=f"test of step {step.order} to {to_email}: {'sent' if test.sent_at else test.error} ({result.note})",
        detail={"test_send": test.id, "rendered_for": rendered_for, "empty_variables": preview.empty_variables},
    )
    audit_record(
        action=AuditAction.CAMPAIGN_TEST_SEND,
        target=step.campaign,
        detail={"step": step.order, "to": to_email, "account": account.pk, "test_send": test.id,
                "sent": bool(test.sent_at), "error": test.error[:500]},
    )  # fmt: skip
    return result
