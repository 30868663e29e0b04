"""Classification: a pluggable classifier (the INBOUND_CLASSIFIER setting names its class) that turns a parsed
message into a verdict. The pipeline (processing/services/classify.py) stores the verdict once per message."""

from dataclasses import dataclass, field
from functools import cache
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string

from processing.parsing import ParsedEmail

CLASSES = ("meeting", "promotion", "intro", "reply", "auto_reply", "bounce", "unknown")


@dataclass(frozen=True)
class Verdict:
    classification: str  # one of CLASSES
    confidence: float  # in [0, 1]
    signals: dict = field(default_factory=dict)  # what decided it (stored with the result, shown in the admin)


class Classifier(Protocol):
    name: str  # e.g. "default"
    version: str  # the model's version (a hash of corpus and parameters), part of each result's processor_id

    def classify(self, parsed: ParsedEmail) -> Verdict: ...


@cache
def classifier_get() -> Classifier:
    """The configured classifier, built once per process (a model loads once)."""
    return import_string(settings.INBOUND_CLASSIFIER)()
