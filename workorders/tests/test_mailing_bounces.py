"""An event mailing's send carries our X-Emailsys-Send header, and a bounce that returns it is tied to that
mailing send: the address is suppressed for every campaign and mailing (the mailing pipeline against a real
SMTP server in this process, then the bounce through processing's classification hook)."""

import email

import pytest

from campaigns.models import BounceRecord
from campaigns.services.suppressions import suppression_matches
from campaigns.services.templating import SEND_REFERENCE_HEADER
from campaigns.tests.inbound_fixtures import fixture_render
from campaigns.tests.test_inbound import deliver
from workorders.models import MailingSend
from workorders.services.state import workorder_steps_create
from workorders.services.steps import workorder_run
from workorders.tests.factories import ContactFactory, WorkOrderFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_hard_bounce_of_a_mailing_send_suppresses_the_address_and_names_that_send(smtp) -> None:
    contact = ContactFactory(language="en")
    work_order = WorkOrderFactory(account__smtp_port=smtp.port, auto_approve=True)
    workorder_steps_create(work_order=work_order)
    assert workorder_run(work_order_id=work_order.id) == "complete"
    (mail,) = [mail for mail in smtp.snapshot() if contact.email in mail.rcpt_tos]
    message = email.message_from_bytes(mail.content)
    send = MailingSend.objects.get(work_order=work_order, email=contact.email)
    assert message[SEND_REFERENCE_HEADER] == f"m.{send.message_id.strip('<>')}"

    reference = message[SEND_REFERENCE_HEADER]
    raw = fixture_render("sendmail_hard.eml", account=work_order.account.email, recipient=contact.email,
                         message_id="<rewritten@relay.test>", send_reference=reference)  # fmt: skip
    inbound = deliver(work_order.account, raw)
    bounce = BounceRecord.objects.get(inbound_email=inbound)
    assert (bounce.kind, bounce.message_id, bounce.account_id) == ("hard", send.message_id, work_order.account_id)
    assert suppression_matches(email=contact.email)


def test_an_unsubscribe_request_answering_a_mailing_unsubscribes_the_contact(smtp) -> None:
    contact = ContactFactory(language="fr")
    work_order = WorkOrderFactory(account__smtp_port=smtp.port, auto_approve=True)
    workorder_steps_create(work_order=work_order)
    assert workorder_run(work_order_id=work_order.id) == "complete"
    send = MailingSend.objects.get(work_order=work_order, email=contact.email)
    raw = fixture_render("unsubscribe_fr.eml", account=work_order.account.email, recipient=contact.email,
                         message_id=send.message_id)  # fmt: skip
    deliver(work_order.account, raw)
    contact.refresh_from_db()
    assert not contact.subscribed
    assert suppression_matches(email=contact.email)
