"""Python's own email test corpus (Lib/test/test_email/data/msg_*.txt; `make email-corpus` installs it) sent raw
through the simulator comes back byte for byte, odd and broken messages included."""

import base64
import sysconfig
from pathlib import Path

import pytest
import requests

from processing.provider_simulator import SimulatorProvider

pytestmark = pytest.mark.django_db(transaction=True)

CORPUS = Path(sysconfig.get_path("stdlib")) / "test" / "test_email" / "data"


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no email test corpus at {CORPUS} (make email-corpus)")
def test_every_corpus_message_round_trips(simulator_url: str) -> None:
    files = sorted(CORPUS.glob("msg_*.txt"))
    assert len(files) > 40
    client = SimulatorProvider(base_url=simulator_url)
    for path in files:
        raw = path.read_bytes()
        payload = {"to": "corpus@example.com", "raw_base64": base64.b64encode(raw).decode()}
        answer = requests.post(f"{simulator_url}/send_email", json=payload, timeout=10)
        assert answer.status_code == 201, (path.name, answer.text)
        assert client.fetch_message("corpus@example.com", answer.json()["email_id"]).raw == raw, path.name
