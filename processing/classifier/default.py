"""PLACEHOLDER until the classifier lands: everything is unknown."""

from processing.classifier import Verdict
from processing.parsing import ParsedEmail


class DefaultClassifier:
    name = "default"
    version = "placeholder"

    def classify(self, parsed: ParsedEmail) -> Verdict:
        return Verdict("unknown", 0.0, {"placeholder": True})
