"""A classifier for the pipeline tests' worker processes (INBOUND_CLASSIFIER names it): "boom" in the subject
raises, anything else is a meeting. No tests here."""

from processing.classifier import Verdict
from processing.parsing import ParsedEmail


class BoomClassifier:
    name = "boom"
    version = "t1"

    def classify(self, parsed: ParsedEmail) -> Verdict:
        if "boom" in parsed.subject:
            raise RuntimeError(f"cannot classify {parsed.subject!r}")
        return Verdict("meeting", 0.9, {"test": True})
