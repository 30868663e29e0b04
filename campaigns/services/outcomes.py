"""What became of an email: the delivery's verdict (`Outcome`, `DeliveryResult`, from SMTP or an ESP) and what the
sending code made of it (`SendOutcome`). A leaf module: it imports nothing of ours, so every layer can use it."""

import enum
from dataclasses import dataclass


class Outcome(enum.StrEnum):
    """The verdict of one delivery attempt, as the server or the ESP gave it."""

    SENT = "sent"
    DEFERRED = "deferred"  # transient, nothing delivered: retry later, preferably on another account
    BOUNCED = "bounced"  # the recipient's address is rejected permanently
    FAILED = "failed"  # permanent failure for this message, nothing delivered
    ACCOUNT_ERROR = "account_error"  # the account cannot send (auth, sender rejected): nothing delivered
    UNKNOWN = "unknown"  # the content went out, no verdict came back


@dataclass(frozen=True)
class DeliveryResult:
    outcome: Outcome
    detail: str = ""
    code: int | None = None
    # The account's side failed (connection, login, MAIL FROM, 421), not this recipient: counts towards pausing
    # the account. A recipient's greylisting (451 to RCPT) does not.
    account_fault: bool = False
    # The ESP's own id for an accepted message (an ESP assigns its own; SES rewrites the Message-ID header too).
    provider_message_id: str = ""

    @property
    def delivered_nothing(self) -> bool:
        return self.outcome is not Outcome.SENT and self.outcome is not Outcome.UNKNOWN


class SendOutcome(enum.StrEnum):
    """What one send attempt (a campaign's or an event mailing's) ended as, once recorded."""

    SENT = "sent"
    UNKNOWN = "unknown"  # may have been delivered: counts as sent, never retried automatically
    DEFERRED = "deferred"  # nothing delivered; due again later
    BOUNCED = "bounced"
    FAILED = "failed"
    TEMPLATE_ERROR = "template error"  # the message could not be built: this recipient fails, nothing sent
    CLAIMED_ELSEWHERE = "claimed by another worker"  # someone else holds the send: nothing done here
    WITHDRAWN = "withdrawn"  # the recipient replied, bounced or unsubscribed, or the lead stopped, meanwhile
    LAPSED = "reservation lapsed"  # its lease passed before the claim and the count was given back: not sent

    @classmethod
    def of(cls, outcome: Outcome) -> "SendOutcome":
        """The recorded outcome of a delivery verdict (an account's error defers the send)."""
        return cls.DEFERRED if outcome is Outcome.ACCOUNT_ERROR else cls(outcome.value)
