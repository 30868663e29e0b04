"""Real processes for tests and benchmarks: Celery workers, beat, daphne, Redis and moto servers on loopback.

Each process runs in its own session (so a kill reaches its children) and logs to a file that a failing
test prints. Waiting is always polling with a deadline, never a bare sleep.
"""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesParser
from functools import cached_property
from pathlib import Path
from typing import TypeVar

from django.conf import settings
from django.db import connection

BASE_DIR = Path(__file__).resolve().parent.parent
BIN_DIR = Path(sys.executable).parent
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], T], *, timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    """Polls until `predicate` returns something truthy (returned) or raises TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as error:  # noqa: BLE001 - retried until the deadline
            last_error = error
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s (last error: {last_error!r})")
        time.sleep(interval)


def port_answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def subprocess_database_url() -> str:
    """The URL of the database this test process uses (pytest-django's test database), for subprocesses."""
    params = connection.settings_dict
    user = params.get("USER") or "postgres"
    password = f":{params['PASSWORD']}" if params.get("PASSWORD") else ""
    host = params.get("HOST") or "127.0.0.1"
    port = params.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{params['NAME']}"


def process_env(**overrides: str) -> dict[str, str]:
    """Environment for a project process: the test settings, the test database, this Redis, plus overrides."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="emailsys.settings.test",
        DATABASE_URL=subprocess_database_url(),
        REDIS_URL=settings.REDIS_URL,
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        CELERY_RESULT_BACKEND=settings.CELERY_RESULT_BACKEND,
        CHANNELS_PREFIX=settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
        PYTHONUNBUFFERED="1",
        PATH=f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.update(overrides)
    return env


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen = field(repr=False)

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self, tail: int = 60) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        return "\n".join(lines[-tail:])

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.popen.pid, signum)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL to the whole process group: no cleanup, like a crashed machine."""
        self.signal_group(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive:
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.signal_group(signal.SIGKILL)  # leftovers of the group (e.g. pool children)
        if self.alive:
            self.popen.wait(timeout=10)


def start_process(name: str, argv: list[str], *, env: dict[str, str], log_dir: Path) -> ManagedProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            argv, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return ManagedProcess(name=name, argv=argv, log_path=log_path, popen=popen)


def unique_token() -> str:
    return uuid.uuid4().hex[:8]


def worker_argv(pool: str, *, node_name: str, concurrency: int = 2) -> list[str]:
    """The same shape of worker command as the Procfile: one pool, only its own queues."""
    worker_pool = "threads" if pool == "sending" else "prefork"
    queues = ",".join(settings.WORKER_POOL_QUEUES[pool])
    return [
        str(BIN_DIR / "celery"), "-A", "emailsys", "worker", "-Q", queues, "-n", node_name,
        "--pool", worker_pool, "--concurrency", str(concurrency), "-l", "INFO", "--without-mingle", "--without-gossip",
    ]  # fmt: skip


def beat_argv(schedule_dir: Path) -> list[str]:
    return [
        str(BIN_DIR / "celery"),
        "-A",
        "emailsys",
        "beat",
        "-l",
        "INFO",
        "--pidfile",
        str(schedule_dir / "beat.pid"),
    ]


def daphne_argv(port: int) -> list[str]:
    return [str(BIN_DIR / "daphne"), "-b", "127.0.0.1", "-p", str(port), "emailsys.asgi:application"]


def moto_server_argv(port: int) -> list[str]:
    """moto's server mode: a real HTTP endpoint for SQS (and other AWS APIs) on loopback, state in memory."""
    return [str(BIN_DIR / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]


def sqs_bridge_argv(*extra: str) -> list[str]:
    return [str(BIN_DIR / "python"), "manage.py", "sqs_bridge", *extra]


def flower_argv(port: int, *, basic_auth: str) -> list[str]:
    """The Procfile's flower command."""
    return [
        str(BIN_DIR / "celery"), "-A", "emailsys", "flower", "--address=127.0.0.1", f"--port={port}",
        f"--basic-auth={basic_auth}",
    ]  # fmt: skip


def redis_server_argv(port: int, directory: Path) -> list[str]:
    return [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(directory),
    ]  # fmt: skip


@dataclass(frozen=True)
class CapturedMail:
    received_at: float  # time.time() when the final "." arrived
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes = field(repr=False)

    @cached_property
    def parsed(self) -> EmailMessage:
        return BytesParser(policy=email_policy.default).parsebytes(self.content)

    @property
    def subject(self) -> str:
        return str(self.parsed["Subject"] or "")

    @property
    def message_id(self) -> str:
        return str(self.parsed["Message-ID"] or "").strip()

    @property
    def in_reply_to(self) -> str:
        return str(self.parsed["In-Reply-To"] or "").strip()

    @property
    def references(self) -> tuple[str, ...]:
        return tuple(str(self.parsed["References"] or "").split())

    @property
    def text(self) -> str:
        """The plain-text part, with LF line ends."""
        body = self.parsed.get_body(("plain",))
        return body.get_content().replace("\r\n", "\n") if body is not None else ""


@dataclass(frozen=True)
class RcptAttempt:
    """One RCPT TO the server was asked, and its answer (rejected or not): what a bounce or a deferral looked like."""

    at: float  # time.time()
    number: int  # 1 for the server's first RCPT, counted over all connections
    mail_from: str
    address: str
    reply: str


@dataclass(frozen=True)
class AuthAttempt:
    """One AUTH the server was sent, with the credentials it carried: what a secret that left looks like."""

    at: float  # time.time()
    mechanism: str
    login: str
    password: str


RcptFault = Callable[[str, int], str | None]
DEFER_REPLY = "451 4.7.1 Try again later"
BOUNCE_REPLY = "550 5.1.1 No such user here"


def every_nth_rcpt_deferred(
    nth: int, *, once_per: Callable[[str], str] | None = None, until: int | None = None, reply: str = DEFER_REPLY
) -> RcptFault:
    """A `rcpt_fault` answering every `nth` RCPT with a 4xx (among the first `until` only, if given). With
    `once_per`, a key of the address (the address itself, its lead …) is deferred at most once, so retries get
    through and a test's length stays bounded."""
    deferred: set[str] = set()

    def fault(address: str, number: int) -> str | None:
        if number % nth or (until is not None and number > until):
            return None
        if once_per is not None:
            key = once_per(address.lower())
            if key in deferred:
                return None
            deferred.add(key)
        return reply

    return fault


class _RecordingHandler:
    def __init__(self, server: "RecordingSmtpServer") -> None:
        self.server = server

    async def handle_EHLO(self, server, session, envelope, hostname, responses) -> list[str]:
        session.host_name = hostname  # what aiosmtpd does itself when no handler hook answers EHLO
        self.server.greeted()
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options) -> str:
        await self.server.maybe_stall("mail")
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        reply = self.server.rcpt_reply(envelope.mail_from or "", address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        received_at = time.time()
        if self.server.data_delay:
            self.server.waiting_replies += 1
            self.server.max_waiting_replies = max(self.server.max_waiting_replies, self.server.waiting_replies)
            await asyncio.sleep(self.server.data_delay)
            self.server.waiting_replies -= 1
        mail = CapturedMail(received_at, envelope.mail_from, tuple(envelope.rcpt_tos), envelope.content)
        self.server.record(mail)
        if self.server.before_data_reply:
            await asyncio.to_thread(self.server.before_data_reply, mail)
        await self.server.maybe_stall("data")
        return self.server.data_reply


class RecordingSmtpServer:
    """A real SMTP server (aiosmtpd) on loopback that records what it accepts, with its receive time.

    `data_delay` answers each message's DATA late, like real providers. RCPT faults: `bounce_addresses` get
    550 5.1.1, `rcpt_replies` maps an address to its reply, and `rcpt_fault(address, number)` may answer any RCPT
    (`number` counts every RCPT the server was asked, from 1), e.g. `every_nth_rcpt_deferred(7)`. Every RCPT and
    its answer is in `rcpt_log`, so a test sees what was refused as well as what was accepted.
    `stall_next("mail" | "data")` holds the next reply at that phase until `release()` (the message is recorded
    before a DATA stall): a client can be killed at a known point. `before_data_reply(mail)` runs in a thread
    before the reply to the final dot.

    AUTH is offered (over plain loopback) when `password` is given — any other password gets 535 — or with
    `any_password`, which takes every login, like a server someone points an account at to collect its password.
    Every AUTH attempt is in `auth_log`, and `ehlo_count` counts the clients that greeted it with EHLO.
    """

    def __init__(
        self,
        *,
        data_delay: float = 0.0,
        port: int | None = None,
        password: str | None = None,
        any_password: bool = False,
        bounce_addresses: Iterable[str] = (),
        rcpt_fault: RcptFault | None = None,
    ) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.port = port or free_port()
        self.data_delay = data_delay
        self.data_reply = "250 Message accepted"
        self.rcpt_replies: dict[str, str] = {address.lower(): BOUNCE_REPLY for address in bounce_addresses}
        self.rcpt_fault = rcpt_fault
        self.rcpt_log: list[RcptAttempt] = []
        self.messages: list[CapturedMail] = []
        self.waiting_replies = self.max_waiting_replies = 0  # messages whose late reply is pending, at most
        self.before_data_reply: Callable[[CapturedMail], None] | None = None
        self.stalled = threading.Event()  # set while a reply is being held
        self._stall_phase: str | None = None
        self._release = threading.Event()
        self._lock = threading.Lock()
        self.auth_log: list[AuthAttempt] = []
        self.ehlo_count = 0
        auth = {}
        if password is not None or any_password:  # AUTH over plain loopback

            def authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
                login, given = auth_data.login.decode(errors="replace"), auth_data.password.decode(errors="replace")
                with self._lock:
                    self.auth_log.append(AuthAttempt(time.time(), mechanism, login, given))
                return AuthResult(success=any_password or given == password, handled=False)

            auth = {"authenticator": authenticator, "auth_require_tls": False}
        self._controller = Controller(
            _RecordingHandler(self), hostname="127.0.0.1", port=self.port, data_size_limit=0, **auth
        )

    def stall_next(self, phase: str) -> None:
        self._release.clear()
        self.stalled.clear()
        self._stall_phase = phase

    def release(self) -> None:
        self._stall_phase = None
        self._release.set()

    async def maybe_stall(self, phase: str) -> None:
        if self._stall_phase != phase:
            return
        self._stall_phase = None  # only the next one
        self.stalled.set()
        await asyncio.to_thread(self._release.wait, 120)

    def rcpt_reply(self, mail_from: str, address: str) -> str | None:
        """The rejection for this RCPT, if any (bounce addresses, then `rcpt_replies`, then `rcpt_fault`); logged."""
        with self._lock:
            number = len(self.rcpt_log) + 1
            reply = self.rcpt_replies.get(address.lower())
            if not reply and self.rcpt_fault is not None:
                reply = self.rcpt_fault(address, number)
            self.rcpt_log.append(RcptAttempt(time.time(), number, mail_from, address, reply or "250 OK"))
        return reply

    def greeted(self) -> None:
        with self._lock:
            self.ehlo_count += 1

    def auth_snapshot(self) -> list[AuthAttempt]:
        with self._lock:
            return list(self.auth_log)

    def record(self, mail: CapturedMail) -> None:
        with self._lock:
            self.messages.append(mail)

    def snapshot(self) -> list[CapturedMail]:
        with self._lock:
            return list(self.messages)

    def rcpt_snapshot(self) -> list[RcptAttempt]:
        with self._lock:
            return list(self.rcpt_log)

    def __enter__(self) -> "RecordingSmtpServer":
        self._controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self._controller.stop()


@dataclass(frozen=True)
class HttpRequestRecord:
    method: str
    path: str
    headers: dict[str, str]  # names lower-case
    body: bytes = field(repr=False)
    number: int = 0  # 1 for the server's first request, 2 for the next…

    @property
    def raw(self) -> bytes:
        """Request line, headers and body as one blob: to search for a value wherever a client put it."""
        head = f"{self.method} {self.path}\n" + "".join(f"{k}: {v}\n" for k, v in self.headers.items())
        return head.encode(errors="replace") + self.body


class RecordingHttpServer:
    """A real HTTP server on loopback (a thread per request) that records every request — method, path, headers,
    body — and answers each with `status` and the JSON `reply`: a dict, or a function of the request (its `number`
    counts the requests so far) returning the dict or (status, dict). Stands in for an ESP's API, a provider or a
    webhook receiver that fails: a test reads what a client sent, credentials included. Use as a context manager;
    `url` is its base URL."""

    def __init__(
        self,
        *,
        reply: dict | Callable[[HttpRequestRecord], dict | tuple[int, dict]] | None = None,
        status: int = 200,
    ) -> None:
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[HttpRequestRecord] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with recorder._lock:
                    record = HttpRequestRecord(
                        self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                        number=len(recorder.requests) + 1,
                    )  # fmt: skip
                    recorder.requests.append(record)
                answer = reply(record) if callable(reply) else (reply or {})
                code, data = answer if isinstance(answer, tuple) else (status, answer)
                body = json.dumps(data).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def snapshot(self) -> list[HttpRequestRecord]:
        with self._lock:
            return list(self.requests)

    def __enter__(self) -> "RecordingHttpServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def api_authorization(user) -> str:
    """An Authorization header value with a new API token of `user`: the one way tests authenticate as someone.
    Made by the service the login endpoint, the admin and `create_api_token` use, with the shipped expiry."""
    from emailsys.services import api_token_create, api_token_ttl_default

    return f"Token {api_token_create(user=user, expires_in=api_token_ttl_default())[1]}"
