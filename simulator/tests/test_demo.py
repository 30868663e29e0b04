"""demo_setup's inbound sample mail: four messages in the demo mailbox, connected by autoconnect; once only."""

from io import StringIO

import pytest

from emailsys.testing import free_port
from processing.demo import DEMO_MAILBOX, demo_inbound_load
from processing.models import Mailbox
from simulator.models import SimMailbox, SimMessage

pytestmark = pytest.mark.django_db(transaction=True)


def test_sample_mail_is_loaded_once_and_connected(settings) -> None:
    settings.INBOUND_SIMULATOR_AUTOCONNECT = True
    settings.INBOUND_WEBHOOK_URL = f"http://127.0.0.1:{free_port()}/webhook"  # nobody: the notifications are hints
    out = StringIO()
    demo_inbound_load(stdout=out)
    demo_inbound_load(stdout=out)
    assert SimMessage.objects.filter(mailbox__address=DEMO_MAILBOX).count() == 4
    assert "already has mail" in out.getvalue()
    mailbox = Mailbox.objects.get(address=DEMO_MAILBOX)
    assert SimMailbox.objects.get(address=DEMO_MAILBOX).watch_secret == mailbox.webhook_secret
    assert SimMailbox.objects.get(address=DEMO_MAILBOX).watch_url == settings.INBOUND_WEBHOOK_URL
    raws = [bytes(raw) for raw in SimMessage.objects.values_list("raw", flat=True)]
    assert any(b"text/calendar" in raw and b"METHOD:REQUEST" in raw for raw in raws)
