"""A campaign's sequence steps written one at a time (the API; the admin edits them inline on the campaign).

Checked like the inline (`full_clean`: one step per order, orders from 1, the placeholder-subject rule), under the
campaign's row lock so a status change cannot slip in between the check and the write. Leads hold their place as
a step *order* (`Lead.current_step`) and send records point at the step, so a change that would move leads or
orphan what was sent is refused with `StepChangeRefused` (the API's 409), never done half-way:

- a step stays in its campaign;
- its order changes only while the campaign is a draft (nothing was sent, no lead has moved);
- it is deleted only while the campaign is not active, no send record points at it (`on_delete=PROTECT`) and no
  lead in progress stands on it (that lead would be finished without its email: `batches._sends_plan`).

Delay, template and threading may change at any time: they apply to the emails not sent yet. A step added to a
running campaign reaches the leads that have not passed its order; a finished lead stays finished.
"""

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from campaigns.models import Campaign, EmailTemplate, Lead, SequenceStep


class StepChangeRefused(ValidationError):
    """The change conflicts with the campaign's state (not with the input): the API answers 409."""


def _campaign_locked(campaign_id: int) -> Campaign:
    return Campaign.objects.select_for_update().get(pk=campaign_id)


def step_create(
    *, campaign: Campaign, order: int, template: EmailTemplate, delay_seconds: int = 0, threaded: bool = False
) -> SequenceStep:
    """Adds a step; ValidationError names the field (an order taken, a placeholder subject on a first step)."""
    with transaction.atomic():
        locked = _campaign_locked(campaign.pk)
        step = SequenceStep(campaign=locked, order=order, template=template, delay_seconds=delay_seconds,
                            threaded=threaded)  # fmt: skip
        step.full_clean()
        step.save()
    return step


def step_update(*, step: SequenceStep, changes: dict[str, Any]) -> SequenceStep:
    """Applies `changes` (order, delay_seconds, template, threaded; campaign only if unchanged)."""
    with transaction.atomic():
        locked = _campaign_locked(step.campaign_id)
        current = SequenceStep.objects.select_for_update().get(pk=step.pk)
        campaign = changes.get("campaign")
        if campaign is not None and campaign.pk != current.campaign_id:
            raise StepChangeRefused(
                {"campaign": f"Step {current.pk} belongs to campaign {current.campaign_id}; a step does not move. "
                             "Create one in the other campaign instead."}
            )  # fmt: skip
        order = changes.get("order", current.order)
        if order != current.order and locked.status != Campaign.Status.DRAFT:
            raise StepChangeRefused(
                {"order": f"Campaign {locked.pk} is {locked.status}: its leads keep their place by step order, so "
                          "orders change only in a draft. Change the delay or template, or add a step."}
            )  # fmt: skip
        for name in ("order", "delay_seconds", "template", "threaded"):
            if name in changes:
                setattr(current, name, changes[name])
        current.campaign = locked
        current.full_clean()
        current.save()
    return current


def step_delete(*, step: SequenceStep) -> None:
    """Deletes a step nothing depends on (module docstring); StepChangeRefused says what does."""
    with transaction.atomic():
        locked = _campaign_locked(step.campaign_id)
        current = SequenceStep.objects.select_for_update().get(pk=step.pk)
        if locked.status == Campaign.Status.ACTIVE:
            raise StepChangeRefused(f"Campaign {locked.pk} is active: pause it before deleting step {current.order}.")
        sent = current.send_records.count()
        if sent:
            raise StepChangeRefused(
                f"Step {current.order} of campaign {locked.pk} cannot be deleted: {sent} send record(s) refer to it."
            )
        waiting = Lead.objects.filter(campaign=locked, state=Lead.State.IN_PROGRESS, current_step=current.order).count()
        if waiting:
            raise StepChangeRefused(
                f"Step {current.order} of campaign {locked.pk} cannot be deleted: {waiting} lead(s) in progress are "
                "at this step and would finish without its email."
            )
        current.delete()
