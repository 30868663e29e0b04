"""Storing provider messages: each once per (mailbox, provider message id), with its raw MIME and parsed
columns; a new row is queued for classification after commit.

CONTRACT (owned by the sync helper; signature fixed):
"""

from processing.models import InboundEmail, Mailbox
from processing.providers import ProviderMessage


def email_store(*, mailbox: Mailbox, message: ProviderMessage, source: str) -> InboundEmail | None:
    """The new row, or None when the message was stored before (nothing else happens then). After commit a new
    row is enqueued for classification (source "webhook": queue inbound; "backfill": inbound_backfill),
    `events.email_queued` and `inbound_count("received")` run."""
    raise NotImplementedError("the sync helper fills this in")
