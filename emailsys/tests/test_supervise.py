"""deploy/supervise.py under honcho, as `make demo` runs the Procfile: a process that exits is restarted while the
others keep running, each exit is one loud line naming the process, its exit code and its last output; one that
keeps failing is given up, which stops the demo with that line; Ctrl-C still stops everything."""

import signal
import sys
from pathlib import Path

import pytest

from emailsys.testing import BASE_DIR, BIN_DIR, process_env, unique_token, wait_until
from emailsys.tests.test_demo_supervisor import processes_marked

SUPERVISE = "python deploy/supervise.py"
# Starts, crashes on its first run only (its marker file says it ran before), then stays up.
FLAKY = (
    "import pathlib, sys, time; p = pathlib.Path(sys.argv[1]); first = not p.exists(); p.touch(); "
    "print('flaky up, first run' if first else 'flaky up again', flush=True); "
    "(first and sys.exit('flaky: lost the database connection')); time.sleep(120)"
)
STEADY = "import os, time; print('steady up, pid', os.getpid(), flush=True); time.sleep(120)"
CRASHER = "print('crasher: out of cheese', flush=True); raise SystemExit(3)"


def honcho(processes, tmp_path: Path, procfile: str, marker: str):
    path = tmp_path / "Procfile"
    path.write_text(procfile)
    env = process_env(EMAILSYS_SUPERVISE_RUN=marker)
    argv = [str(BIN_DIR / "honcho"), "start", "-f", str(path), "-d", str(BASE_DIR)]
    return processes("honcho", argv, env=env)


@pytest.mark.timeout(60)
def test_a_crashed_process_is_restarted_while_the_others_run_on_and_ctrl_c_stops_all(processes, tmp_path) -> None:
    marker = unique_token()
    flag = tmp_path / "flaky-ran"
    procfile = (
        f'flaky: {SUPERVISE} flaky --backoff 0.5 -- {sys.executable} -c "{FLAKY}" {flag}\n'
        f'steady: {SUPERVISE} steady -- {sys.executable} -c "{STEADY}"\n'
    )
    run = honcho(processes, tmp_path, procfile, marker)

    wait_until(lambda: "flaky up again" in run.log(200), timeout=20, what="flaky restarted")
    log = run.log(200)
    assert "supervise: flaky !!! exited with code 1 after" in log
    assert "its last output: flaky up, first run | flaky: lost the database connection" in log
    assert "restarting in 0.5s (restart 1)" in log
    assert log.count("steady up, pid") == 1, "the other process was not restarted"
    assert run.alive, "honcho stopped the demo"

    run.signal_group(signal.SIGINT)  # Ctrl-C
    assert run.popen.wait(timeout=20) is not None
    wait_until(lambda: not processes_marked(f"EMAILSYS_SUPERVISE_RUN={marker}"), timeout=15, what="all stopped")
    assert "restart 2" not in run.log(400), "a stop was answered with a restart"


@pytest.mark.timeout(60)
def test_a_process_that_keeps_failing_is_given_up_and_stops_the_demo_saying_why(processes, tmp_path) -> None:
    marker = unique_token()
    procfile = (
        f'crasher: {SUPERVISE} crasher --backoff 0.1 --max-quick-failures 3 -- {sys.executable} -c "{CRASHER}"\n'
        f'steady: {SUPERVISE} steady -- {sys.executable} -c "{STEADY}"\n'
    )
    run = honcho(processes, tmp_path, procfile, marker)

    assert run.popen.wait(timeout=30) == 3
    log = run.log(400)
    assert log.count("supervise: crasher !!! exited with code 3") == 3
    assert "restarting in 0.1s (restart 1)" in log and "restarting in 0.2s (restart 2)" in log
    assert (
        "its last output: crasher: out of cheese; it failed 3 times in a row within 30s of starting: giving up" in log
    )
    wait_until(lambda: not processes_marked(f"EMAILSYS_SUPERVISE_RUN={marker}"), timeout=15, what="all stopped")
