"""How an account's mail leaves: the one module that looks at `account.transport`.

Campaign sends, event mailings, operator test sends, `test_smtp` and the admin's account test all come here.
Both ways keep the exactly-once line: `on_handover` (which commits HANDED_OVER and says whether the claim is
still ours) runs after which nothing can be taken back — the 354 reply to DATA over SMTP, right before the API
request for an ESP — and nothing is sent if it returns False.

SMTP hands over and reads the verdict in two calls (`delivery_start`, then the sessions' `verdict_read`), so
one thread can keep several messages awaiting their verdicts; an ESP's answer is the verdict at once.
"""

import smtplib
from collections.abc import Callable

from audit.actions import AuditAction
from audit.services import audit_record
from campaigns.models import SenderAccount
from campaigns.services.esp import esp_account_check, esp_send
from campaigns.services.outcomes import DeliveryResult
from campaigns.services.smtp import SmtpSessions, smtp_account_check
from emailsys.db import connection_release_while_waiting


def _through_esp(account: SenderAccount) -> bool:
    return account.transport == SenderAccount.Transport.ESP


def delivery_start(
    *,
    account: SenderAccount,
    sessions: SmtpSessions,
    recipient: str,
    message_bytes: bytes,
    on_handover: Callable[[], bool],
) -> DeliveryResult | smtplib.SMTP:
    """Hands the message over: an SMTP connection now awaiting its verdict (read it with
    `sessions.verdict_read`), or the result (an ESP's verdict, or why nothing was delivered). The database
    connection is not held while connecting, nor during an API call."""
    if _through_esp(account):

        def hand_over_released() -> bool:
            handed_over = on_handover()
            connection_release_while_waiting()
            return handed_over

        return esp_send(account=account, message=message_bytes, on_handover=hand_over_released)
    if not sessions.has_free(account):
        connection_release_while_waiting()  # TCP, TLS and AUTH take time; MAIL/RCPT/DATA on an open one are quick
    return sessions.hand_over(account, recipient=recipient, message_bytes=message_bytes, on_handover=on_handover)


def delivery_would_connect(*, account: SenderAccount, sessions: SmtpSessions) -> bool:
    """Whether the next message to the account would open a new SMTP connection (an ESP needs none)."""
    return not _through_esp(account) and not sessions.has_free(account)


def deliver(
    *,
    account: SenderAccount,
    sessions: SmtpSessions,
    recipient: str,
    message_bytes: bytes,
    on_handover: Callable[[], bool],
) -> DeliveryResult:
    """One message, waiting for its verdict."""
    started = delivery_start(
        account=account, sessions=sessions, recipient=recipient, message_bytes=message_bytes, on_handover=on_handover
    )
    if isinstance(started, DeliveryResult):
        return started
    connection_release_while_waiting()
    return sessions.verdict_read(started)


def deliver_once(*, account: SenderAccount, recipient: str, message_bytes: bytes) -> DeliveryResult:
    """One message outside the exactly-once ledger (an operator's test send), on a connection of its own."""
    sessions = SmtpSessions()
    try:
        return deliver(
            account=account, sessions=sessions, recipient=recipient, message_bytes=message_bytes,
            on_handover=lambda: True,
        )  # fmt: skip
    finally:
        sessions.close()


def account_check(*, account: SenderAccount, timeout: float = 10) -> tuple[bool, str]:
    """Whether the account can send, without sending: (ok, what happened). Never reveals a secret. SMTP
    connects, secures, logs in and quits; an ESP is asked a cheap question with the account's credentials."""
    if _through_esp(account):
        ok, detail = esp_account_check(account=account)
    else:
        ok, detail = smtp_account_check(account=account, timeout=timeout)
    audit_record(action=AuditAction.ACCOUNT_TEST, target=account, detail={"ok": ok, "result": detail[:500]})
    return ok, detail
