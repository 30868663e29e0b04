"""Classification of stored messages: exactly one result per message, however often or concurrently a message's
task runs (the result's unique key decides; only the insert that won publishes and counts).

CONTRACT (owned by the sync helper; signatures fixed):
"""

from processing.models import EmailResult, InboundEmail


def email_classify(*, email_pk: int) -> EmailResult | None:
    """Classifies the message unless it has a result; returns the new result, None when it had one (or the
    message is gone). Raises on a classifier error (the task retries: PROCESSOR_MAX_RETRIES,
    PROCESSOR_RETRY_DELAY_MS); after the last attempt the message is marked failed with the error."""
    raise NotImplementedError("the sync helper fills this in")


def email_reclassify(*, email: InboundEmail) -> EmailResult:
    """An operator's re-classify: replaces the result in one transaction (with the current classifier)."""
    raise NotImplementedError("the sync helper fills this in")
