"""The send-attempt ledger's invariants and lower-case recipient emails, enforced by PostgreSQL: a row that breaks
them is refused whatever code writes it; the entry points users type addresses into lower-case them first."""

import io
import uuid
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse
from rest_framework.test import APIClient

from campaigns.models import Recipient, SendAttempt, SendRecord
from campaigns.services.imports import leads_import_csv
from campaigns.services.leads import leads_create
from campaigns.tests.factories import CampaignFactory, LeadFactory, RecipientFactory, SendRecordFactory
from emailsys import clock
from emailsys.testing import api_authorization
from workorders.models import MailingSend
from workorders.tests.factories import WorkOrderFactory

pytestmark = pytest.mark.django_db

State = SendAttempt.State


def send_record(**values) -> SendRecord:
    return SendRecordFactory(**values)


def mailing_send(**values) -> MailingSend:
    work_order = WorkOrderFactory()
    return MailingSend.objects.create(
        work_order=work_order, email="tester@example.test", event_code=work_order.event.code, stage="invitation",
        language="en", is_test=True, test_run=1, **values,
    )  # fmt: skip


def claim(**overrides) -> dict:
    return {"claim_token": uuid.uuid4(), "claimed_until": clock.now() + timedelta(minutes=5), **overrides}


def refused(create, constraint: str, **values) -> None:
    with pytest.raises(IntegrityError, match=constraint), transaction.atomic():
        create(**values)


@pytest.mark.parametrize(
    ("create", "table"), [(send_record, "campaigns_sendrecord"), (mailing_send, "workorders_mailingsend")]
)
def test_a_claimed_or_handed_over_send_holds_a_claim_and_no_other_does(create, table) -> None:
    in_flight = f"{table}_claimed_while_in_flight"
    refused(create, in_flight, state=State.CLAIMED, claim_token=None, claimed_until=None)
    refused(create, in_flight, **claim(state=State.CLAIMED, claim_token=None))
    refused(create, in_flight, **claim(state=State.CLAIMED, claimed_until=None))
    refused(create, in_flight, **claim(state=State.HANDED_OVER, claim_token=None, handed_over_at=clock.now()))
    for final in (State.SENT, State.DEFERRED, State.FAILED, State.BOUNCED, State.SKIPPED, State.UNKNOWN):
        sent = {"sent_at": clock.now(), "message_id": "<m@x>"} if final == State.SENT else {}
        refused(create, in_flight, **claim(state=final, claimed_until=None), **sent)
        refused(create, in_flight, **claim(state=final, claim_token=None), **sent)

    create(**claim(state=State.CLAIMED))
    create(**claim(state=State.HANDED_OVER, handed_over_at=clock.now()))
    create(state=State.DEFERRED, claim_token=None, claimed_until=None)


@pytest.mark.parametrize(
    ("create", "table"), [(send_record, "campaigns_sendrecord"), (mailing_send, "workorders_mailingsend")]
)
def test_a_handed_over_send_has_the_time_it_was_handed_over(create, table) -> None:
    refused(create, f"{table}_handed_over_has_time", **claim(state=State.HANDED_OVER, handed_over_at=None))


def test_settling_a_claimed_record_without_clearing_its_claim_is_refused() -> None:
    record = send_record(**claim(state=State.CLAIMED))
    with pytest.raises(IntegrityError, match="claimed_while_in_flight"), transaction.atomic():
        SendRecord.objects.filter(id=record.id).update(state=State.FAILED)


# --- recipient emails ------------------------------------------------------------------------------------------


def test_a_mixed_case_recipient_email_is_refused_by_the_database() -> None:
    lead = LeadFactory()
    with pytest.raises(IntegrityError, match="recipient_email_lowercase"), transaction.atomic():
        Recipient.objects.create(lead=lead, position=0, email="Jane@Example.test")
    recipient = RecipientFactory(lead=lead)
    with pytest.raises(IntegrityError, match="recipient_email_lowercase"), transaction.atomic():
        Recipient.objects.filter(id=recipient.id).update(email="Jane@Example.test")


@pytest.fixture
def api(admin_user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=api_authorization(admin_user))
    return client


def test_a_mixed_case_email_is_stored_lower_case_whichever_way_it_comes_in(admin_client, api) -> None:
    campaign = CampaignFactory()
    lead = LeadFactory(campaign=campaign)
    added = admin_client.post(
        reverse("admin:campaigns_recipient_add"),
        {"lead": lead.pk, "position": 0, "email": "  Admin.User@Example.TEST ", "status": "not_contacted"},
    )
    assert added.status_code == 302, added.context["adminform"].form.errors
    posted = api.post(
        "/api/v1/leads/",
        {"campaign": campaign.pk, "external_id": "api", "recipients": [{"email": "Api.User@Example.TEST"}]},
        format="json",
    )
    assert posted.status_code == 201, posted.json()
    leads_import_csv(campaign=campaign, file=io.StringIO("lead_id,email\ncsv,Csv.User@Example.TEST\n"))
    leads_create(leads=[{"campaign": campaign, "recipients": [{"email": "Service.User@Example.TEST"}]}])
    cleaned = Recipient(lead=lead, position=1, email="Clean.User@Example.TEST")
    cleaned.full_clean()

    assert cleaned.email == "clean.user@example.test"
    assert sorted(Recipient.objects.filter(lead__campaign=campaign).values_list("email", flat=True)) == [
        "admin.user@example.test", "api.user@example.test", "csv.user@example.test", "service.user@example.test",
    ]  # fmt: skip


def test_the_same_address_twice_in_a_leads_admin_inline_is_a_form_error_not_a_crash(admin_client) -> None:
    lead = LeadFactory(external_id="acme")
    inline = "recipients"
    data = {
        "campaign": lead.campaign_id, "external_id": "acme", "custom_fields": "{}",
        f"{inline}-TOTAL_FORMS": 2, f"{inline}-INITIAL_FORMS": 0, f"{inline}-MIN_NUM_FORMS": 0,
        f"{inline}-MAX_NUM_FORMS": 1000,
        f"{inline}-0-position": 0, f"{inline}-0-email": "jane@example.test", f"{inline}-0-status": "not_contacted",
        f"{inline}-0-lead": lead.pk,
        f"{inline}-1-position": 1, f"{inline}-1-email": "Jane@Example.test", f"{inline}-1-status": "not_contacted",
        f"{inline}-1-lead": lead.pk,
    }  # fmt: skip

    response = admin_client.post(reverse("admin:campaigns_lead_change", args=[lead.pk]), data)

    assert response.status_code == 200
    assert "Please correct the duplicate data for email" in response.content.decode()
    assert not Recipient.objects.filter(lead=lead).exists()
