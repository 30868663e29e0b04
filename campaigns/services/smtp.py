"""SMTP delivery that knows where it failed: before the final `.` of DATA (nothing delivered, safe to retry)
or after it (outcome unknown, never retried automatically).

smtplib's `sendmail` hides that line, so the envelope is driven step by step: MAIL, RCPT, DATA, then a
caller hook (`on_handover`) runs after the 354 reply and before the content is sent. The hook commits the
send record's HANDED_OVER state; if it returns False (the claim was lost) the content is never sent. Handing
over and reading the verdict are separate calls, so one thread can have several messages (each on its own
connection) waiting for their verdicts: a server that answers the final dot late does not idle the thread.
"""

import re
import select
import smtplib
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache

from django.conf import settings

from campaigns.models import SenderAccount
from campaigns.services.destinations import smtp_login_refusal
from campaigns.services.outcomes import DeliveryResult, Outcome

_BOUNCE_CODES = {550, 551, 553}
_DEFER_CODES = {421, 450, 451, 452}


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


class SmtpLoginRefused(smtplib.SMTPException):
    """The account must not log in where it points (`smtp_login_refusal`): nothing was connected to."""


def smtp_connect(account: SenderAccount, *, timeout: float | None = None) -> smtplib.SMTP:
    """Connected, secured and logged in. Raises smtplib/OSError exceptions, classified by the caller; before
    connecting, `SmtpLoginRefused` when the password may not go there (no AUTH without TLS, except to loopback
    or SMTP_PLAINTEXT_AUTH_HOSTS) or none is stored. With STARTTLS, smtplib raises before AUTH when the server
    does not offer it."""
    refusal = smtp_login_refusal(account)
    if refusal is not None:
        raise SmtpLoginRefused(refusal)
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
    if isinstance(error, SmtpLoginRefused):
        return DeliveryResult(Outcome.ACCOUNT_ERROR, str(error))
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


def smtp_account_check(*, account: SenderAccount, timeout: float = 10) -> tuple[bool, str]:
    """Connects, secures and logs in, then quits: (ok, what happened). Never reveals the password."""
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


# --- the connections a worker thread keeps -------------------------------------------------------------------


@dataclass
class SmtpSessions:
    """Open SMTP connections per account, reused across leads and batches by one worker thread.

    A thread may have several messages to one account awaiting their verdicts, each on its own connection:
    `get()` returns one that awaits nothing, opening another if needed. A connection idle for a while is
    checked with NOOP before reuse (servers drop idle clients); `close_idle()` hangs up on accounts not used
    recently. Verdicts of handed-over messages are read through `verdict_read` (or given up on with
    `verdict_given_up`), which frees their connections again.
    """

    connections: dict[int, list[smtplib.SMTP]] = field(default_factory=dict)
    last_used: dict[int, float] = field(default_factory=dict)
    awaiting: set[int] = field(default_factory=set)  # id() of connections whose verdict is not read yet
    check_after_seconds: float = 5.0

    def get(self, account: SenderAccount) -> smtplib.SMTP:
        pool = self.connections.setdefault(account.id, [])
        pool[:] = [connection for connection in pool if connection.sock is not None]
        idle = time.monotonic() - self.last_used.get(account.id, 0.0)
        self.last_used[account.id] = time.monotonic()
        for connection in pool:
            if id(connection) in self.awaiting:
                continue
            if idle > self.check_after_seconds and not _answers_noop(connection):
                continue
            return connection
        connection = smtp_connect(account)
        pool.append(connection)
        return connection

    def has_free(self, account: SenderAccount) -> bool:
        """An open connection to the account that awaits no verdict."""
        return any(
            connection.sock is not None and id(connection) not in self.awaiting
            for connection in self.connections.get(account.id, ())
        )

    def hand_over(
        self, account: SenderAccount, *, recipient: str, message_bytes: bytes, on_handover: Callable[[], bool]
    ) -> DeliveryResult | smtplib.SMTP:
        """`smtp_hand_over` on a free connection: the connection now awaiting its verdict, or why nothing (or
        no verdict) came."""
        try:
            connection = self.get(account)
        except (smtplib.SMTPException, OSError) as error:
            return smtp_classify_connect_error(error)
        refused = smtp_hand_over(
            connection, envelope_from=account.email, recipient=recipient, message_bytes=message_bytes,
            on_handover=on_handover,
        )  # fmt: skip
        if refused is not None:
            return refused
        self.awaiting.add(id(connection))
        return connection

    def verdict_read(self, connection: smtplib.SMTP) -> DeliveryResult:
        try:
            return smtp_verdict(connection)
        finally:
            self.awaiting.discard(id(connection))

    def verdict_given_up(self, connection: smtplib.SMTP, *, waited: float) -> DeliveryResult:
        self.awaiting.discard(id(connection))
        return smtp_no_verdict(connection, waited=waited)

    def close_idle(self, *, max_idle_seconds: float) -> None:
        now = time.monotonic()
        for account_id in [a for a, used in self.last_used.items() if now - used > max_idle_seconds]:
            for connection in self.connections.pop(account_id, ()):
                _hang_up(connection)
            self.last_used.pop(account_id, None)

    def close(self) -> None:
        for pool in self.connections.values():
            for connection in pool:
                _hang_up(connection)
        self.connections.clear()
        self.last_used.clear()
        self.awaiting.clear()


def _answers_noop(connection: smtplib.SMTP) -> bool:
    try:
        return connection.noop()[0] == 250
    except (smtplib.SMTPException, OSError):
        connection.close()
        return False


def _hang_up(connection: smtplib.SMTP) -> None:
    try:
        connection.quit()
    except (smtplib.SMTPException, OSError):
        connection.close()
