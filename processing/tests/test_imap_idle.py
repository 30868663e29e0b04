"""manage.py imap_idle against a real Dovecot with a real inbound worker and no beat: a delivered message is stored
and classified within seconds because IDLE woke a poll; after the server drops the connection the watcher
reconnects and catches up; SIGTERM ends it at once."""

import signal
import socket
import time

import pytest

from campaigns.tests.factories import SenderAccountFactory
from emailsys.ops_clients import ops_redis
from emailsys.testing import BIN_DIR, ManagedProcess, process_env, unique_token, wait_until, worker_argv
from processing.models import EmailResult, ImapAccount, InboundEmail
from processing.services.imap import imap_account_create
from processing.tests.test_imap import message


def ready(worker: ManagedProcess) -> bool:
    return worker.log_path.exists() and " ready." in worker.log_path.read_text(errors="replace")


@pytest.mark.django_db(transaction=True)
def test_idle_wakes_a_poll_that_stores_new_mail_and_the_watcher_reconnects_and_stops_on_sigterm(
    imap_server, imap_user, processes
) -> None:
    ops_redis().flushdb()  # no task left over from an earlier test
    name, password = imap_user
    account = imap_account_create(
        sender_account=SenderAccountFactory(email=f"{name}@emailsys.test"), host=imap_server.host,
        port=imap_server.port, security="none", username=name, password=password,
    )  # fmt: skip
    env = process_env(IMAP_IDLE_BACKOFF_MAX_SECONDS="2")
    node = f"imap-{unique_token()}@{socket.gethostname()}"
    worker = processes("inbound-worker", worker_argv("inbound", node_name=node, concurrency=1), env=env)
    idle = processes("imap-idle", [str(BIN_DIR / "python"), "manage.py", "imap_idle", "--refresh", "1"], env=env)
    wait_until(lambda: ready(worker), timeout=60, what="inbound worker ready")
    # The watcher's catch-up poll after connecting: the worker ran it.
    wait_until(lambda: ImapAccount.objects.get(pk=account.pk).last_polled_at, timeout=60, what="first poll")
    wait_until(lambda: "idling on" in idle.log(), timeout=30, what="watcher idling")

    started = time.monotonic()
    imap_server.deliver(name, message("woken by IDLE"))
    wait_until(
        lambda: EmailResult.objects.filter(email__mailbox=account.mailbox, email__subject="woken by IDLE").exists(),
        timeout=30,
        what="the message stored and classified",
    )
    woken_in = time.monotonic() - started
    print(f"IDLE to classified: {woken_in:.2f}s")

    # The server drops every connection of the user: the watcher reconnects (backoff) and a poll catches up.
    imap_server.doveadm("kick", name)
    imap_server.deliver(name, message("after the kick"))
    wait_until(
        lambda: InboundEmail.objects.filter(mailbox=account.mailbox, subject="after the kick").exists(),
        timeout=30,
        what="the message after the reconnection stored",
    )
    assert InboundEmail.objects.filter(mailbox=account.mailbox).count() == 2

    idle.signal_group(signal.SIGTERM)
    stopping = time.monotonic()
    idle.popen.wait(timeout=15)
    assert idle.popen.returncode == 0, idle.log()
    assert time.monotonic() - stopping < 10
