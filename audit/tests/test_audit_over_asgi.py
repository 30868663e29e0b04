"""The audit context through the real ASGI application served by daphne, as in production: a token-authenticated
API call and a session-authenticated admin action are recorded with their users, sources and address."""

import re

import pytest
import requests
from auditlog.models import LogEntry
from django.contrib.auth.models import Permission
from django.test import Client

from campaigns.models import Campaign
from campaigns.tests.factories import (
    CampaignAccountFactory,
    CampaignFactory,
    EmailTemplateFactory,
    SenderAccountFactory,
    SequenceStepFactory,
)
from emailsys.testing import api_authorization, daphne_argv, free_port, port_answers, process_env, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def base_url(processes) -> str:
    port = free_port()
    daphne = processes("daphne", daphne_argv(port), env=process_env())
    wait_until(lambda: port_answers(port), timeout=30, what="daphne listening")
    assert daphne.alive
    return f"http://127.0.0.1:{port}"


def test_api_and_admin_requests_served_by_daphne_are_recorded_with_their_users(base_url, django_user_model):
    campaign = CampaignFactory(status=Campaign.Status.ACTIVE)
    SequenceStepFactory(campaign=campaign, order=1, template=EmailTemplateFactory())
    account = SenderAccountFactory()
    CampaignAccountFactory(campaign=campaign, account=account)
    operator = django_user_model.objects.create_user("ops", password="x", is_staff=True)
    granted = ["operate_senderaccount", "change_senderaccount", "view_senderaccount"]
    operator.user_permissions.add(*Permission.objects.filter(codename__in=granted))
    boss = django_user_model.objects.create_superuser("boss", "boss@emailsys.test", "x")

    api = requests.post(
        f"{base_url}/api/v1/accounts/{account.pk}/pause/",
        json={"reason": "over ASGI"},
        headers={"Authorization": api_authorization(operator)},
        timeout=30,
    )
    assert api.status_code == 200, api.text

    browser = requests.Session()
    client = Client()
    client.force_login(boss)
    browser.cookies.set("sessionid", client.cookies["sessionid"].value)
    changelist = f"{base_url}/admin/campaigns/campaign/"
    page = browser.get(changelist, timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    action = browser.post(
        changelist,
        data={"csrfmiddlewaretoken": token, "action": "pause", "_selected_action": [campaign.pk]},
        headers={"Referer": changelist},
        timeout=30,
    )
    assert action.status_code == 200 and "now paused" in action.text, action.text[-2000:]

    trail = [(e.additional_data["action"], e.additional_data["source"], e.actor_id, e.remote_addr)
             for e in LogEntry.objects.order_by("id")]  # fmt: skip
    assert trail == [
        ("account.pause", "api", operator.pk, "127.0.0.1"),
        ("campaign.pause", "admin", boss.pk, "127.0.0.1"),
    ]
