"""An event mailing's send whose outcome is unknown (no reply to the final dot) is flagged, never resent by
itself, and decided by an operator in the admin: mark sent, mark failed, or resend anyway."""

import pytest
from django.urls import reverse

from emailsys.testing import RecordingSmtpServer
from workorders.models import MailingSend
from workorders.services.lifecycle import workorder_restart
from workorders.services.steps import workorder_run
from workorders.tests.test_steps import audience, make_work_order

pytestmark = pytest.mark.django_db(transaction=True)
CHANGELIST = reverse("admin:workorders_mailingsend_changelist")


def unknown_sends(settings, smtp: RecordingSmtpServer, contacts: int) -> list[MailingSend]:
    """Every reply to a final dot comes after the SMTP timeout: each send's outcome is unknown."""
    settings.CAMPAIGN_SMTP_TIMEOUT = 0.5
    smtp.data_delay = 1.5
    audience(en=contacts, fr=0)
    work_order = make_work_order(smtp)
    workorder_run(work_order_id=work_order.id)
    sends = list(MailingSend.objects.filter(work_order=work_order, is_test=False).order_by("id"))
    assert [send.state for send in sends] == ["unknown"] * contacts
    assert "after DATA" in sends[0].last_error
    smtp.data_delay = 0
    return sends


def test_unknown_mailing_sends_are_never_resent_until_an_operator_says_so(settings, admin_client) -> None:
    with RecordingSmtpServer() as smtp:
        first, second, third = unknown_sends(settings, smtp, contacts=3)
        work_order_id = first.work_order_id
        workorder_restart(work_order_id=work_order_id, step="send")
        workorder_run(work_order_id=work_order_id)
        assert smtp.snapshot() == []  # a second Send run leaves unknown sends alone (the client hung up on them)
        assert MailingSend.objects.filter(work_order_id=work_order_id, state="unknown").count() == 3

        for send, action in ((first, "mark_sent"), (second, "mark_failed"), (third, "resend")):
            response = admin_client.post(CHANGELIST, {"action": action, "_selected_action": [send.id]}, follow=True)
            assert response.status_code == 200
        assert MailingSend.objects.get(id=first.id).state == "sent"
        assert MailingSend.objects.get(id=second.id).state == "failed"
        resent = MailingSend.objects.get(id=third.id)
        assert resent.state == "deferred" and resent.resolved_by == "admin"

        workorder_restart(work_order_id=work_order_id, step="send")
        workorder_run(work_order_id=work_order_id)
        assert [mail.rcpt_tos[0] for mail in smtp.snapshot()] == [third.email]  # only the one to resend
        assert MailingSend.objects.get(id=third.id).state == "sent"

        again = admin_client.post(CHANGELIST, {"action": "mark_failed", "_selected_action": [first.id]}, follow=True)
        assert "only sends with an unknown outcome" in again.content.decode()
        assert MailingSend.objects.get(id=first.id).state == "sent"


def test_the_mailing_send_pages_show_the_message_as_handed_over(settings, admin_client) -> None:
    with RecordingSmtpServer() as smtp:
        (send,) = unknown_sends(settings, smtp, contacts=1)
    listing = admin_client.get(CHANGELIST, {"state__exact": "unknown"}).content.decode()
    assert send.email in listing
    page = admin_client.get(reverse("admin:workorders_mailingsend_change", args=[send.id])).content.decode()
    assert "List-Unsubscribe" in page and send.message_id in page.replace("&lt;", "<").replace("&gt;", ">")
