"""IDLE watchers: one thread per enabled IMAP mailbox keeps a connection in IDLE and asks for a poll
(`imap_poll_request`) when the server says something changed (EXISTS, RECENT). IDLE is never the source of truth:
the poll reads from the stored cursor, and beat polls every mailbox anyway, so a lost IDLE response only delays.

A watcher reconnects with exponential backoff (capped at IMAP_IDLE_BACKOFF_MAX_SECONDS) after any connection
error, re-issues IDLE every IMAP_IDLE_RENEW_SECONDS (RFC 2177: within 29 minutes), and asks for a catch-up poll
after each (re)connection, for whatever arrived while it was away. A server without CAPABILITY IDLE is left to
beat's poll. `IdleSupervisor.run` returns within about a second of `stop()` (SIGTERM in manage.py imap_idle).
"""

import logging
import random
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import close_old_connections, connection
from imapclient import IMAPClient

from emailsys.health import process_heartbeat_record
from processing.models import ImapAccount
from processing.services.imap import (
    CONNECTION_ERRORS,
    CONNECTION_WARNING,
    ImapRefused,
    _error_text,
    _logout,
    imap_connect,
    imap_poll_request,
)
from processing.services.sync import mailbox_warn

logger = logging.getLogger(__name__)

IDLE_CHECK_SECONDS = 1.0  # how long one wait for IDLE responses lasts: the latency of noticing stop()
WAKING_RESPONSES = {b"EXISTS", b"RECENT"}

Wake = Callable[[int], None]


class IdleConnectionLost(ConnectionError):
    """The server ended the IDLE connection (BYE, or EOF): reconnect."""


@dataclass
class _Watcher:
    mailbox_id: int
    fingerprint: tuple
    thread: threading.Thread
    stop: threading.Event = field(default_factory=threading.Event)


def _fingerprint(account: ImapAccount) -> tuple:
    """What a watcher's connection depends on: a change of any of it restarts the watcher."""
    return (account.host, account.port, account.security, account.username, account.password, account.folder)


class IdleSupervisor:
    """Keeps one watcher per enabled IMAP mailbox (optionally only `addresses`), checking the settings every
    `refresh_seconds`: new ones start, disabled or changed ones stop (and restart with the new settings)."""

    def __init__(self, *, wake: Wake = lambda mailbox_id: imap_poll_request(mailbox_id=mailbox_id),
                 refresh_seconds: float = 30.0, addresses: list[str] | None = None) -> None:  # fmt: skip
        self.wake = wake
        self.refresh_seconds = refresh_seconds
        self.addresses = [address.strip().lower() for address in addresses or []]
        self.stopping = threading.Event()
        self.watchers: dict[int, _Watcher] = {}

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    self._reconcile()
                except Exception:  # the database went away for a moment: keep the watchers, try again
                    logger.exception("imap_idle: could not read the IMAP settings")
                    close_old_connections()
                # manage.py probe imap-idle: the supervisor's loop is alive (its watchers report through the mailboxes)
                process_heartbeat_record(role="imap-idle", extra={"watching": len(self.watchers)})
                self.stopping.wait(self.refresh_seconds)
        finally:
            for watcher in self.watchers.values():
                watcher.stop.set()
            for watcher in self.watchers.values():
                watcher.thread.join(timeout=settings.IMAP_TIMEOUT_SECONDS + 5)
            connection.close()

    def _reconcile(self) -> None:
        accounts = ImapAccount.objects.filter(enabled=True, mailbox__enabled=True).select_related("mailbox")
        if self.addresses:
            accounts = accounts.filter(mailbox__address__in=self.addresses)
        wanted = {account.mailbox_id: _fingerprint(account) for account in accounts}
        for mailbox_id, watcher in list(self.watchers.items()):
            if wanted.get(mailbox_id) != watcher.fingerprint or not watcher.thread.is_alive():
                watcher.stop.set()
                del self.watchers[mailbox_id]
        for mailbox_id, fingerprint in wanted.items():
            if mailbox_id not in self.watchers:
                stop = threading.Event()
                thread = threading.Thread(
                    target=_watch, args=(mailbox_id, stop, self.wake), name=f"imap-idle-{mailbox_id}", daemon=True
                )
                self.watchers[mailbox_id] = _Watcher(mailbox_id, fingerprint, thread, stop)
                thread.start()
        logger.debug("imap_idle: watching %s", sorted(self.watchers))


def _watch(mailbox_id: int, stop: threading.Event, wake: Wake) -> None:
    """One mailbox's watcher thread, until `stop`."""
    delay = 1.0
    try:
        while not stop.is_set():
            account = ImapAccount.objects.select_related("mailbox").filter(mailbox_id=mailbox_id, enabled=True).first()
            if account is None:
                return
            try:
                client = imap_connect(account)
                try:
                    client.select_folder(account.folder, readonly=True)
                    if not client.has_capability("IDLE"):
                        ImapAccount.objects.filter(pk=account.pk).update(has_idle=False)
                        logger.info("imap_idle: %s has no IDLE; beat's poll reads it", account.mailbox.address)
                        stop.wait(settings.IMAP_IDLE_RENEW_SECONDS)
                        continue
                    logger.info("imap_idle: idling on %s %s", account.mailbox.address, account.folder)
                    wake(mailbox_id)  # whatever arrived while this watcher was not connected
                    delay = 1.0
                    _idle_until_stopped(client, stop, wake, mailbox_id)
                finally:
                    _logout(client)
            except (*CONNECTION_ERRORS, ImapRefused) as error:
                text = f"{CONNECTION_WARNING} (IDLE, {account}): {_error_text(error)}; reconnecting in {delay:.0f}s"
                logger.warning("imap_idle: %s: %s", account.mailbox.address, text)
                mailbox_warn(mailbox_id, text)
                stop.wait(delay * (1 + random.random() / 4))
                delay = min(delay * 2, settings.IMAP_IDLE_BACKOFF_MAX_SECONDS)
            finally:
                close_old_connections()
    except Exception:
        logger.exception("imap_idle: watcher of mailbox %s failed; the supervisor restarts it", mailbox_id)
    finally:
        connection.close()


def _idle_until_stopped(client: IMAPClient, stop: threading.Event, wake: Wake, mailbox_id: int) -> None:
    """IDLE, re-issued every IMAP_IDLE_RENEW_SECONDS, waking a poll on EXISTS or RECENT; returns on `stop`."""
    while not stop.is_set():
        client.idle()
        renew_at = time.monotonic() + settings.IMAP_IDLE_RENEW_SECONDS
        lost = False
        try:
            while not stop.is_set() and time.monotonic() < renew_at:
                responses = _idle_check(client, IDLE_CHECK_SECONDS)
                if any(response[:1] == (b"BYE",) for response in responses) or _closed(client, responses):
                    lost = True
                    break
                if any(len(response) > 1 and response[1] in WAKING_RESPONSES for response in responses):
                    wake(mailbox_id)
        finally:
            if not lost:
                client.idle_done()
        if lost:
            raise IdleConnectionLost("the server closed the connection")


def _closed(client: IMAPClient, responses: list) -> bool:
    """imapclient's idle_check swallows EOF and returns nothing, at once and forever after: a socket that still
    polls readable after an empty check, twice, is closed. (A false alarm costs a reconnection and a catch-up
    poll.)"""
    if responses or not _readable(client):
        return False
    return not _idle_check(client, 0) and _readable(client)


def _idle_check(client: IMAPClient, timeout: float) -> list:
    """idle_check, then the socket's timeout back: imapclient leaves it blocking without one, and a dead server
    would then hang idle_done() forever."""
    try:
        return client.idle_check(timeout=timeout)
    finally:
        client.socket().settimeout(settings.IMAP_TIMEOUT_SECONDS)


def _readable(client: IMAPClient) -> bool:
    poller = select.poll()
    poller.register(client.socket().fileno(), select.POLLIN)
    return bool(poller.poll(0))
