"""manage.py inbound_connect against a live server: it connects mailboxes through the simulator's HTTP API, and
--test fails clearly (exit code 1) when the results do not arrive. The full --test round trip needs the inbound
pipeline and a worker (see processing's end-to-end tests)."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from emailsys.testing import free_port
from processing.models import Mailbox
from simulator.models import SimMailbox, SimMessage

pytestmark = pytest.mark.django_db(transaction=True)


def test_connects_the_given_mailboxes_through_the_simulator(live_server, simulator_url: str) -> None:
    out = StringIO()
    webhook = f"{live_server.url}/webhook"
    call_command("inbound_connect", fakemail=simulator_url, webhook=webhook, mailbox=["A@example.com"], stdout=out)
    mailbox = Mailbox.objects.get(address="a@example.com")
    assert mailbox.provider_url == simulator_url and mailbox.webhook_secret.startswith("whsec_")
    subscription = SimMailbox.objects.get(address="a@example.com")
    assert (subscription.watch_url, subscription.watch_secret) == (webhook, mailbox.webhook_secret)
    assert f"Connected a@example.com: {simulator_url} notifies {webhook}" in out.getvalue()

    # Without --mailbox: every mailbox we have (connecting again rotates the secret).
    call_command("inbound_connect", fakemail=simulator_url, webhook=webhook, stdout=StringIO())
    assert SimMailbox.objects.get(address="a@example.com").watch_secret == Mailbox.objects.get().webhook_secret
    assert Mailbox.objects.get().webhook_secret != mailbox.webhook_secret


def test_with_no_mailbox_a_demo_mailbox_is_connected(live_server, simulator_url: str) -> None:
    call_command("inbound_connect", fakemail=simulator_url, webhook=f"{live_server.url}/webhook", stdout=StringIO())
    assert Mailbox.objects.filter(address="demo@example.com").exists()


def test_test_mode_sends_and_fails_when_no_result_arrives(live_server, simulator_url: str) -> None:
    out = StringIO()
    with pytest.raises(CommandError, match="4 of 4 test emails have no result after 1s"):
        call_command(
            "inbound_connect",
            fakemail=simulator_url,
            webhook=f"http://127.0.0.1:{free_port()}/webhook",  # nobody listens: nothing gets classified
            mailbox=["t@example.com"],
            test=True,
            timeout=1,
            stdout=out,
        )
    assert SimMessage.objects.filter(mailbox__address="t@example.com").count() == 4
    assert "0/4 classified" in out.getvalue() and "NO RESULT" in out.getvalue()


def test_an_unreachable_simulator_is_a_clear_error() -> None:
    with pytest.raises(CommandError, match="(?s)could not connect x@example.com .*Is the web server running"):
        call_command("inbound_connect", fakemail=f"http://127.0.0.1:{free_port()}/simulator", mailbox=["x@example.com"])
    assert not Mailbox.objects.filter(address="x@example.com").exists()
