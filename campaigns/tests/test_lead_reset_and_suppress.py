"""reset_lead_progress never leaves a lead in progress in a completed campaign (refused with the reason, or
--reactivate), and `suppress` of an existing entry says so: judged by the command's output and the admin's
messages."""

from io import StringIO

import pytest
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.core.management.base import CommandError

from campaigns.models import Campaign, Lead, Suppression
from campaigns.tests.conftest import NOW
from campaigns.tests.factories import CampaignAccountFactory, CampaignFactory, LeadFactory, SequenceStepFactory

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def finished_lead(*, status: str, ready: bool = True) -> Lead:
    campaign = CampaignFactory(status=status, name="Spring")
    if ready:
        SequenceStepFactory(campaign=campaign)
        CampaignAccountFactory(campaign=campaign)
    return LeadFactory(campaign=campaign, current_step=3, state=Lead.State.FINISHED, next_due_at=None)


def test_resetting_a_lead_of_a_completed_campaign_is_refused_with_the_reason_and_changes_nothing(now):
    lead = finished_lead(status=Campaign.Status.COMPLETED)

    with pytest.raises(CommandError) as error:
        run("reset_lead_progress", str(lead.pk))

    assert str(error.value) == (
        f"Campaign {lead.campaign_id} is completed and sends nothing: lead {lead.pk} would stay in progress and never "
        "be sent. Reset it with --reactivate to make the campaign active again, or reset the whole campaign "
        "(reset_campaign_progress)."
    )
    lead.refresh_from_db()
    assert (lead.state, lead.current_step) == (Lead.State.FINISHED, 3)
    assert Campaign.objects.get(pk=lead.campaign_id).status == Campaign.Status.COMPLETED


def test_reactivate_resets_the_lead_and_makes_its_completed_campaign_active(now):
    lead = finished_lead(status=Campaign.Status.COMPLETED)

    output = run("reset_lead_progress", str(lead.pk), "--reactivate")

    assert output == (
        f"Lead {lead.pk} reset: step 1, in_progress, due now.\n"
        f"Campaign {lead.campaign_id} Spring reactivated: completed → active.\n"
    )
    lead.refresh_from_db()
    assert (lead.state, lead.current_step, lead.next_due_at) == (Lead.State.IN_PROGRESS, 1, NOW)
    assert Campaign.objects.get(pk=lead.campaign_id).status == Campaign.Status.ACTIVE


def test_reactivate_of_a_campaign_that_cannot_be_active_is_refused_and_the_lead_is_left_alone(now):
    lead = finished_lead(status=Campaign.Status.COMPLETED, ready=False)

    with pytest.raises(CommandError, match="cannot be activated: it needs at least one sequence step and at least"):
        run("reset_lead_progress", str(lead.pk), "--reactivate")

    lead.refresh_from_db()
    assert (lead.state, lead.current_step) == (Lead.State.FINISHED, 3)


def test_a_lead_of_a_paused_campaign_is_reset_with_a_note_that_it_waits_for_the_campaign(now):
    lead = finished_lead(status=Campaign.Status.PAUSED)

    output = run("reset_lead_progress", str(lead.pk))

    assert output.splitlines()[1] == (
        f"Note: campaign {lead.campaign_id} is paused; the lead is sent once the campaign is active."
    )


def test_the_admin_reset_action_says_why_a_completed_campaigns_lead_was_not_reset_and_resets_the_others(
    admin_client,
) -> None:
    refused = finished_lead(status=Campaign.Status.COMPLETED)
    other = finished_lead(status=Campaign.Status.ACTIVE)

    response = admin_client.post(
        "/admin/campaigns/lead/", {"action": "reset_progress", "_selected_action": [refused.pk, other.pk]}, follow=True
    )

    shown = [str(message) for message in get_messages(response.wsgi_request)]
    assert response.status_code == 200
    assert any(f"Campaign {refused.campaign_id} is completed and sends nothing" in text for text in shown), shown
    assert "1 lead(s) start over at step 1, due now." in shown
    assert Lead.objects.get(pk=refused.pk).state == Lead.State.FINISHED
    assert Lead.objects.get(pk=other.pk).state == Lead.State.IN_PROGRESS


def test_suppress_of_an_existing_entry_says_it_already_was_and_keeps_the_first_reason():
    assert run("suppress", "Jane@Example.com", "--reason", "asked") == "Suppressed address jane@example.com.\n"

    again = run("suppress", "jane@example.com", "--reason", "other")

    day = Suppression.objects.get().created_at.strftime("%Y-%m-%d")
    assert again == f"Already suppressed: address jane@example.com (since {day}, reason: asked); nothing changed.\n"
    assert list(Suppression.objects.values_list("value", "reason")) == [("jane@example.com", "asked")]


def test_suppress_of_an_address_whose_domain_is_suppressed_says_so():
    run("suppress", "spam.example")

    output = run("suppress", "joe@spam.example")

    assert output == "Suppressed address joe@spam.example.\nNote: the whole domain spam.example is suppressed too.\n"
