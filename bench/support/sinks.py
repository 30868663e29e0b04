"""SMTP sinks on loopback: Postfix's smtp-sink when it is on the PATH, else aiosmtpd in a process of its own."""

import multiprocessing
import os
import shutil
import time
from pathlib import Path

SINK_NICE = -10


def fast_sink(scratch: Path):
    return PostfixSmtpSink(scratch) if shutil.which("smtp-sink") else SinkProcess()


class PostfixSmtpSink:
    """Postfix's smtp-sink: a C sink that costs next to no CPU, so the figures are the sender's alone."""

    label = "Postfix smtp-sink"

    def __init__(self, scratch: Path) -> None:
        from emailsys.testing import free_port

        self.port = free_port()
        self.scratch = scratch
        self.process = None

    def sessions(self) -> int | None:
        return None

    def __enter__(self) -> "PostfixSmtpSink":
        from emailsys.testing import port_answers, start_process, wait_until

        as_root = ["-u", "nobody"] if os.geteuid() == 0 else []  # it refuses to keep root's privileges
        argv = ["smtp-sink", *as_root, f"127.0.0.1:{self.port}", "1000"]
        self.process = start_process("smtp-sink", argv, env=dict(os.environ), log_dir=self.scratch)
        wait_until(lambda: port_answers(self.port), timeout=10, what="smtp-sink")
        return self

    def __exit__(self, *exc) -> None:
        self.process.stop()


class SinkProcess:
    """The aiosmtpd sink in its own process, like a real server: its event loop shares no GIL (and no CPU
    accounting) with the benchmark's own polling threads, which would otherwise delay every SMTP reply."""

    def __init__(self, *, data_delay: float = 0.0) -> None:
        from emailsys.testing import free_port

        context = multiprocessing.get_context("spawn")
        self.port = free_port()
        self.data_delay = data_delay
        self._sessions, self._niced = context.Value("i", 0), context.Value("i", 0)
        self._ready, self._stop = context.Event(), context.Event()
        self._process = context.Process(
            target=_sink_serve,
            args=(data_delay, self.port, self._sessions, self._niced, self._ready, self._stop),
            daemon=True,
        )

    @property
    def label(self) -> str:
        missing = "" if shutil.which("smtp-sink") else "; Postfix smtp-sink is not installed here"
        priority = f"at nice {SINK_NICE}" if self._niced.value else "at normal priority (not allowed to raise it)"
        return f"aiosmtpd (emailsys.testing.RecordingSmtpServer in its own process, {priority}{missing})"

    def sessions(self) -> int:
        time.sleep(0.2)  # the count is published every 0.1 s
        return self._sessions.value

    def __enter__(self) -> "SinkProcess":
        self._process.start()
        if not self._ready.wait(30):
            raise RuntimeError("the SMTP sink process did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._process.join(10)


def _sink_serve(data_delay: float, port: int, session_count, niced, ready, stop) -> None:
    """`CountingSmtpServer` in a process of its own, publishing its session count. It stands in for a remote
    provider, whose reply time does not grow with our CPU load: it runs at a higher priority where allowed."""
    try:
        os.nice(SINK_NICE)
        niced.value = 1
    except PermissionError:
        niced.value = 0
    with CountingSmtpServer(data_delay=data_delay, port=port) as server:
        ready.set()
        while not stop.wait(0.1):
            session_count.value = server.session_count
        session_count.value = server.session_count


class CountingSmtpServer:
    """`RecordingSmtpServer` that also counts SMTP sessions (one EHLO each): shows connection reuse."""

    def __init__(self, *, data_delay: float = 0.0, port: int | None = None) -> None:
        from emailsys.testing import RecordingSmtpServer

        self.server = RecordingSmtpServer(data_delay=data_delay, port=port)
        self.port = self.server.port
        self.session_count = 0
        handler = self.server._controller.handler
        counter = self

        class Handler(type(handler)):
            async def handle_EHLO(self, server, session, envelope, hostname, responses):
                session.host_name = hostname
                counter.session_count += 1  # the event loop is one thread: no lock needed
                return responses

        self.server._controller.handler = Handler(self.server)

    @property
    def label(self) -> str:
        missing = "" if shutil.which("smtp-sink") else "; Postfix smtp-sink is not installed here"
        return f"aiosmtpd (emailsys.testing.RecordingSmtpServer{missing})"

    def sessions(self) -> int | None:
        return self.session_count

    def __enter__(self) -> "CountingSmtpServer":
        self.server.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.server.__exit__(*exc)
