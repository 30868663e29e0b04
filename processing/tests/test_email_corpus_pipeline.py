"""Python's own email test corpus (Lib/test/test_email/data/msg_*.txt, installed by `make test` from Debian's
libpython3.11-testsuite) sent raw through the simulator into the real pipeline (daphne, an inbound worker): every
message is stored with its exact bytes and classified; none crashes anything."""

from pathlib import Path

import pytest

from emailsys.testing import unique_token, wait_until
from processing.models import EmailResult, InboundEmail
from processing.tests.test_inbound_acceptance import Stack, all_classified, assert_results_served

CORPUS = Path("/usr/lib/python3.11/test/test_email/data")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


def test_every_message_of_pythons_email_corpus_is_stored_and_classified(processes, settings) -> None:
    files = sorted(CORPUS.glob("msg_*.txt"))
    assert len(files) >= 40, f"Python's email test corpus is missing at {CORPUS} (make test installs it)"
    stack = Stack(processes, settings)
    stack.worker("inbound-1")
    address = f"corpus-{unique_token()}@example.com"
    stack.connect(address)
    stack.workers_ready()

    sent: dict[str, bytes] = {}
    for path in files:
        raw = path.read_bytes()
        answer = stack.http.post(f"{stack.simulator_url}/send_email", json={"to": address, "raw": raw.decode()},
                                 timeout=30)  # fmt: skip
        assert answer.status_code == 201, (path.name, answer.text)
        sent[answer.json()["email_id"]] = raw
    wait_until(all_classified(sent), timeout=120, interval=0.25, what="every corpus message classified")

    stored = {email.email_id: bytes(email.raw) for email in InboundEmail.objects.filter(email_id__in=sent)}
    assert stored == sent
    assert EmailResult.objects.filter(email__email_id__in=sent).count() == len(sent)
    assert not InboundEmail.objects.exclude(status="classified").exists()
    assert_results_served(stack, list(sent))
