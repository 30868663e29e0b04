import pytest


@pytest.fixture(autouse=True)
def media_in_tmp(settings, tmp_path) -> None:
    """Uploaded files go to the test's own directory, not the checkout's var/media."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
