"""Live events of inbound mail (the seed's `email_event` messages on WS /ws/emails/{client_id}, the dashboard's
inbound panel). Called by the pipeline after commit; never raises (a live outage must not fail classification).

CONTRACT (owned by the api/live helper; signatures fixed):
"""

from processing.models import EmailResult, InboundEmail


def email_queued(email: InboundEmail) -> None:
    """A message was stored and waits for classification (`event: "queue"`)."""


def email_processed(email: InboundEmail, result: EmailResult) -> None:
    """A message got its result (`event: "process"`, with the result); also a stats update."""
