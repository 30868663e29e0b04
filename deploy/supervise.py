"""Runs one Procfile process and restarts it when it exits, with a backoff, saying loudly which one died and why.

    web: python deploy/supervise.py web -- daphne -b 127.0.0.1 -p 8000 emailsys.asgi:application

Why: honcho (make demo) stops every process as soon as one exits, and the reason scrolls away among thousands of
lines. Under this wrapper a crash is one line "supervise: web exited with code 1 ... restarting in 2s (restart 3)"
plus the process's own last lines, and the rest of the demo keeps running. A process that keeps failing within
seconds of its start is given up after --max-quick-failures: the wrapper then exits with its code and says so,
and honcho stops the demo with that line as its last word.

A stop (SIGTERM from honcho, SIGINT, SIGHUP) is passed on to the process and never answered with a restart. The
process runs in the wrapper's process group, so honcho's group signals reach both; the wrapper forwards the signal
too, for a stop sent to the wrapper alone (a repeated SIGTERM is harmless to daphne, Celery and manage.py).

Standard library only, no Django: the wrapper must run whatever state the project is in.
"""

import argparse
import collections
import os
import signal
import subprocess
import sys
import threading
import time

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
LAST_LINES = 5


def _say(name: str, text: str) -> None:
    print(f"supervise: {name} {text}", file=sys.stderr, flush=True)


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    def __init__(self, *, name: str, argv: list[str], backoff: float, max_backoff: float, healthy_after: float,
                 max_quick_failures: int) -> None:  # fmt: skip
        self.name = name
        self.argv = argv
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.healthy_after = healthy_after
        self.max_quick_failures = max_quick_failures
        self.stopping = threading.Event()
        self.child: subprocess.Popen | None = None

    def on_signal(self, signum: int, _frame) -> None:
        self.stopping.set()
        child = self.child
        if child is not None and child.poll() is None:
            try:
                child.send_signal(signum)
            except ProcessLookupError:
                pass

    def run_once(self) -> tuple[int, float, list[str]]:
        """Runs the process to its end: (return code, seconds it ran, its last output lines). Its output goes on to
        ours line by line (honcho prefixes it), the last few kept for the exit message."""
        started = time.monotonic()
        last: collections.deque[str] = collections.deque(maxlen=LAST_LINES)
        self.child = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
        assert self.child.stdout is not None
        for raw in iter(self.child.stdout.readline, b""):
            sys.stdout.buffer.write(raw)
            sys.stdout.buffer.flush()
            if raw.strip():
                last.append(raw.decode(errors="replace").rstrip())
        code = self.child.wait()
        return code, time.monotonic() - started, list(last)

    def run(self) -> int:
        quick_failures = 0
        restarts = 0
        while True:
            try:
                code, ran, last = self.run_once()
            except OSError as error:  # the command cannot start at all (not found, not executable)
                _say(self.name, f"could not start {self.argv[0]!r}: {error}; giving up")
                return 127
            if self.stopping.is_set():
                return code
            quick_failures = 0 if ran >= self.healthy_after else quick_failures + 1
            reason = f"{_exit_reason(code)} after {ran:.1f}s"
            tail = (" — its last output: " + " | ".join(last)) if last else " (it printed nothing)"
            if quick_failures >= self.max_quick_failures:
                _say(self.name, f"!!! {reason}{tail}; it failed {quick_failures} times in a row within "
                     f"{self.healthy_after:.0f}s of starting: giving up (exit {code or 1})")  # fmt: skip
                return code or 1
            delay = min(self.max_backoff, self.backoff * 2 ** max(0, quick_failures - 1))
            restarts += 1
            _say(self.name, f"!!! {reason}{tail}; restarting in {delay:.1f}s (restart {restarts})")
            if self.stopping.wait(delay):
                return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="the Procfile line's name, for the messages")
    parser.add_argument("--backoff", type=float, default=1.0, help="first wait before a restart, doubled each time")
    parser.add_argument("--max-backoff", type=float, default=30.0)
    parser.add_argument("--healthy-after", type=float, default=30.0,
                        help="a run this long counts as healthy and resets the backoff")  # fmt: skip
    parser.add_argument("--max-quick-failures", type=int, default=5)
    parser.epilog = "The command and its arguments follow a --."
    argv = sys.argv[1:] if argv is None else argv
    own, command = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = parser.parse_args(own)
    if not command:
        parser.error("no command to supervise (give it after --)")
    supervisor = Supervisor(
        name=args.name,
        argv=command,
        backoff=args.backoff,
        max_backoff=args.max_backoff,
        healthy_after=args.healthy_after,
        max_quick_failures=args.max_quick_failures,
    )
    for signum in STOP_SIGNALS:
        signal.signal(signum, supervisor.on_signal)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")  # the child's lines reach the terminal as they are written
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
