"""The default classifier: structural rules first (rules.py), then the calibrated text model (model.py).

A rule that is certain decides alone. A rule that only usually holds (bulk headers → promotion, In-Reply-To →
reply, a mailer-daemon sender → bounce) stands unless the model is at least OVERRIDE_AT sure of another class, so
a reply that introduces someone or a mailing-list thread carrying List-Unsubscribe still come out right. Without
a rule the model decides, and below settings.INBOUND_UNKNOWN_BELOW the answer is `unknown`. Never raises."""

from django.conf import settings

from processing.classifier import Verdict
from processing.classifier.model import TextModel, model_default, model_text
from processing.classifier.rules import rule_decide, structure_read
from processing.parsing import ParsedEmail

OVERRIDE_AT = 0.8


class DefaultClassifier:
    name = "default"

    def __init__(self, model: TextModel | None = None) -> None:
        self.model = model or model_default()
        self.version = self.model.version
        self.unknown_below = float(getattr(settings, "INBOUND_UNKNOWN_BELOW", 0.5))

    def classify(self, parsed: ParsedEmail) -> Verdict:
        try:
            return self._classify(parsed)
        except Exception as error:  # noqa: BLE001 - any message gets a verdict; the error is kept in the signals
            return Verdict("unknown", 0.0, {"error": f"{type(error).__name__}: {error}"[:300]})

    def _classify(self, parsed: ParsedEmail) -> Verdict:
        structure = structure_read(parsed)
        rule = rule_decide(structure)
        signals: dict = {"structure": structure.facts}
        if rule and not rule.needs_model:
            return Verdict(rule.classification, rule.confidence, signals | {"rule": rule.rule})
        probabilities = self.model.probabilities(model_text(parsed, structure.tokens()))
        best = int(probabilities.argmax())
        label, confidence = self.model.classes[best], float(probabilities[best])
        signals["model"] = {"class": label, "probability": round(confidence, 4)}
        if rule:
            if label != rule.classification and confidence >= OVERRIDE_AT:
                return Verdict(label, confidence, signals | {"rule_overridden": rule.rule})
            agreed = float(probabilities[self.model.classes.index(rule.classification)])
            return Verdict(rule.classification, max(rule.confidence, agreed), signals | {"rule": rule.rule})
        if label == "unknown" or confidence < self.unknown_below:
            return Verdict("unknown", confidence if label == "unknown" else 1.0 - confidence, signals)
        return Verdict(label, confidence, signals)
