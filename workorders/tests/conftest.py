from collections.abc import Iterator

import pytest

from emailsys.testing import RecordingSmtpServer


@pytest.fixture
def smtp() -> Iterator[RecordingSmtpServer]:
    with RecordingSmtpServer() as server:
        yield server


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    """Prepared emails and dry-run lists go to this test's own directory."""
    settings.MEDIA_ROOT = tmp_path / "media"
