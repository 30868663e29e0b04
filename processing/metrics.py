"""Inbound metrics on /metrics, shared by every process through Redis (as emailsys/metrics.py does).

CONTRACT (owned by the api/live helper; signatures fixed, never raise):
"""


def inbound_count(event: str, *, label: str = "", amount: int = 1) -> None:
    """Counts an inbound event: "received", "classified" (label: the class), "failed", "duplicate",
    "poison_skipped", "resync", "webhook" (label: the outcome: accepted, duplicate, unsigned, bad_signature,
    stale_timestamp, too_large, malformed, unknown_mailbox)."""


def classification_observe(*, seconds: float, classification: str) -> None:
    """One classification's processing time (the histogram)."""
