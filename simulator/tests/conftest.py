import pytest


@pytest.fixture
def simulator_url(live_server, settings) -> str:
    """The simulator of a live server in this process; autoconnect off unless a test turns it on (it would subscribe
    mailboxes to the INBOUND_WEBHOOK_URL setting)."""
    settings.INBOUND_SIMULATOR_AUTOCONNECT = False
    return f"{live_server.url}/simulator"
