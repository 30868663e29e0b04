"""SMTP delivery that knows where it failed: before the final `.` of DATA (nothing delivered, safe to retry)
or after it (outcome unknown, never retried automatically).

smtplib's `sendmail` hides that line, so the envelope is driven step by step: MAIL, RCPT, DATA, then a
caller hook (`on_handover`) runs after the 354 reply and before the content is sent. The hook commits the
send record's HANDED_OVER state; if it returns False (the claim was lost) the content is never sent. Handing
over and reading the verdict are separate calls, so one thread can have several messages (each on its own
connection) waiting for their verdicts: a server that answers the final dot late does not idle the thread.
"""

import enum
import re
import select
import smtplib
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

from django.conf import settings

from campaigns.models import SenderAccount

_BOUNCE_CODES = {550, 551, 553}
_DEFER_CODES = {421, 450, 451, 452}


class Outcome(enum.StrEnum):
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


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode(errors="replace") if isinstance(message, bytes) else str(message)
    return f"{code} {text}".strip()


def _rcpt_outcome(code: int, message: bytes) -> Outcome:
    enhanced = re.match(rb"\s*(\d)\.(\d{1,3})\.(\d{1,3})", message or b"")
    if code in _BOUNCE_CODES or (code >= 500 and enhanced and enhanced.group(1) == b"5" and enhanced.group(2) == b"1"):
        return Outcome.BOUNCED
    if 400 <= code < 500:
        return Outcome.DEFERRED
    return Outcome.FAILED


def _reject_outcome(code: int) -> Outcome:
    return Outcome.DEFERRED if 400 <= code < 500 or code in _DEFER_CODES else Outcome.FAILED


@cache
def _tls_context() -> ssl.SSLContext:
    """Loading the CA bundle costs ~30 ms of CPU: once per process, not per connection."""
    return ssl.create_default_context()


def smtp_connect(account: SenderAccount, *, timeout: float | None = None) -> smtplib.SMTP:
    """Connected, secured and logged in. Raises smtplib/OSError exceptions, classified by the caller."""
    timeout = timeout or settings.CAMPAIGN_SMTP_TIMEOUT
    context = _tls_context() if account.security != SenderAccount.Security.NONE else None
    if account.security == SenderAccount.Security.TLS:
        connection: smtplib.SMTP = smtplib.SMTP_SSL(
            account.smtp_host, account.smtp_port, timeout=timeout, context=context
        )
    else:
        connection = smtplib.SMTP(account.smtp_host, account.smtp_port, timeout=timeout)
    try:
        connection.ehlo()
        if account.security == SenderAccount.Security.STARTTLS:
            connection.starttls(context=context)
            connection.ehlo()
        if account.smtp_username:
            connection.login(account.smtp_username, account.smtp_password)
    except BaseException:
        _close_quietly(connection)
        raise
    return connection


def _close_quietly(connection: smtplib.SMTP) -> None:
    try:
        connection.close()
    except OSError:
        pass


def _quote_content(message_bytes: bytes) -> bytes:
    normalized = re.sub(rb"(?:\r\n|\n|\r(?!\n))", b"\r\n", message_bytes)
    quoted = re.sub(rb"(?m)^\.", b"..", normalized)
    if not quoted.endswith(b"\r\n"):
        quoted += b"\r\n"
    return quoted + b".\r\n"


def smtp_hand_over(
    connection: smtplib.SMTP,
    *,
    envelope_from: str,
    recipient: str,
    message_bytes: bytes,
    on_handover: Callable[[], bool],
) -> DeliveryResult | None:
    """MAIL, RCPT, DATA, the hook, then the content and its final dot. None: the message is with the server,
    whose verdict `smtp_verdict` reads (the caller may start other messages on other connections meanwhile).
    Otherwise why nothing was delivered; the connection is then reset and reusable, or closed
    (`connection.sock` is None)."""
    try:
        code, reply = connection.mail(envelope_from)
        if code != 250:
            connection.rset()
            outcome = Outcome.DEFERRED if 400 <= code < 500 else Outcome.ACCOUNT_ERROR
            return DeliveryResult(outcome, f"MAIL FROM: {_reply(code, reply)}", code, account_fault=True)
        code, reply = connection.rcpt(recipient)
        if code not in (250, 251):
            connection.rset()
            return DeliveryResult(_rcpt_outcome(code, reply), f"RCPT TO: {_reply(code, reply)}", code, code == 421)
        code, reply = connection.docmd("DATA")
        if code != 354:
            connection.rset()
            return DeliveryResult(_reject_outcome(code), f"DATA: {_reply(code, reply)}", code, code == 421)
    except UnicodeEncodeError:  # a non-ASCII address and a server without SMTPUTF8: permanent, nothing sent
        connection.rset()
        return DeliveryResult(Outcome.FAILED, "before DATA: the address is not ASCII and the server lacks SMTPUTF8")
    except (smtplib.SMTPException, OSError) as error:
        _close_quietly(connection)
        return DeliveryResult(Outcome.DEFERRED, f"before DATA: {type(error).__name__}: {error}", account_fault=True)

    if not on_handover():
        _close_quietly(connection)  # no final dot: the server discards the transaction
        return DeliveryResult(Outcome.DEFERRED, "claim lost before handover; nothing sent")
    try:
        connection.send(_quote_content(message_bytes))
    except (smtplib.SMTPException, OSError) as error:
        _close_quietly(connection)
        return DeliveryResult(Outcome.UNKNOWN, f"after DATA: {type(error).__name__}: {error}")
    return None


def smtp_verdict(connection: smtplib.SMTP) -> DeliveryResult:
    """The server's reply to the final dot of a handed-over message. After UNKNOWN the connection is closed."""
    try:
        code, reply = connection.getreply()
    except (TimeoutError, smtplib.SMTPException, OSError) as error:
        _close_quietly(connection)
        return DeliveryResult(Outcome.UNKNOWN, f"after DATA: {type(error).__name__}: {error}")
    if code == 250:
        return DeliveryResult(Outcome.SENT, _reply(code, reply), code)
    if code == -1:  # smtplib's "connection closed" marker: no verdict
        _close_quietly(connection)
        return DeliveryResult(Outcome.UNKNOWN, "after DATA: connection closed without a reply")
    outcome = _rcpt_outcome(code, reply) if code >= 500 else _reject_outcome(code)
    return DeliveryResult(outcome, f"end of DATA: {_reply(code, reply)}", code)


def smtp_first_answered(connections: Sequence[smtplib.SMTP], *, timeout: float) -> int | None:
    """The index of the first connection (in the given order) whose server has replied or hung up, waiting up
    to `timeout` seconds for one; None if none did."""

    def answered(connection: smtplib.SMTP) -> bool:
        sock = connection.sock
        return sock is None or (isinstance(sock, ssl.SSLSocket) and sock.pending() > 0)

    for index, connection in enumerate(connections):
        if answered(connection):
            return index
    readable, _, _ = select.select([connection.sock for connection in connections], [], [], max(0.0, timeout))
    return next((index for index, connection in enumerate(connections) if connection.sock in readable), None)


def smtp_no_verdict(connection: smtplib.SMTP, *, waited: float) -> DeliveryResult:
    """The server did not answer the final dot in time: hang up; the message may or may not have been taken."""
    _close_quietly(connection)
    return DeliveryResult(Outcome.UNKNOWN, f"after DATA: no reply within {waited:.0f} s")


def smtp_deliver(
    connection: smtplib.SMTP,
    *,
    envelope_from: str,
    recipient: str,
    message_bytes: bytes,
    on_handover: Callable[[], bool],
) -> DeliveryResult:
    """One message over an open connection, waiting for its verdict."""
    refused = smtp_hand_over(
        connection, envelope_from=envelope_from, recipient=recipient, message_bytes=message_bytes,
        on_handover=on_handover,
    )  # fmt: skip
    return refused or smtp_verdict(connection)


def smtp_classify_connect_error(error: BaseException) -> DeliveryResult:
    """Errors while connecting or logging in: nothing was sent."""
    if isinstance(error, smtplib.SMTPAuthenticationError):
        return DeliveryResult(
            Outcome.ACCOUNT_ERROR,
            f"authentication failed: {_reply(error.smtp_code, error.smtp_error)}",
            error.smtp_code,
        )
    if isinstance(error, smtplib.SMTPNotSupportedError):  # e.g. a username set but the server offers no AUTH
        return DeliveryResult(Outcome.ACCOUNT_ERROR, f"connect: {error}")
    if isinstance(error, smtplib.SMTPResponseException) and error.smtp_code >= 500:
        return DeliveryResult(
            Outcome.ACCOUNT_ERROR, f"connect: {_reply(error.smtp_code, error.smtp_error)}", error.smtp_code
        )
    return DeliveryResult(Outcome.DEFERRED, f"connect: {type(error).__name__}: {error}", account_fault=True)


def account_test_smtp(*, account: SenderAccount, timeout: float = 10) -> tuple[bool, str]:
    """Connects, secures and logs in, then quits: (ok, what happened). Never reveals the password. An ESP
    account is checked with a cheap API call instead (`account_test_esp`)."""
    if account.transport == SenderAccount.Transport.ESP:
        from campaigns.services.esp import account_test_esp

        return account_test_esp(account=account)
    try:
        connection = smtp_connect(account, timeout=timeout)
    except (smtplib.SMTPException, OSError) as error:
        return False, smtp_classify_connect_error(error).detail
    try:
        code, reply = connection.noop()
        connection.quit()
    except (smtplib.SMTPException, OSError) as error:
        return False, f"{type(error).__name__}: {error}"
    return code == 250, f"connected to {account.smtp_host}:{account.smtp_port} ({account.security}), NOOP {code}"
