from datetime import UTC, datetime

import pytest

from emailsys import clock

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def now(monkeypatch) -> datetime:
    """The campaign clock pinned to a Monday noon (UTC) for this test, in this process."""
    monkeypatch.setattr(clock, "now", lambda: NOW)
    return NOW
