"""deploy/systemd: one unit per Procfile role (but the demo stand-ins) that runs the role's program, restarts always,
runs as the emailsys user with the hardening the VM install promises, and that `systemd-analyze verify` accepts.

verify checks that each ExecStart binary exists, so it runs against a fake root in tmp_path: the documented paths
(/opt/emailsys/.venv/bin/..., /etc/emailsys/env) exist there as stand-ins, beside a copy of this machine's system
units (sysinit.target and friends). No systemd instance is started or needed."""

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from emailsys.tests.test_deployment_files import option_value, worker_queues
from emailsys.tests.test_k8s_manifests import SYSTEMD, deployable_roles, program_of

SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
VENV_BIN = "/opt/emailsys/.venv/bin"


def unit_files() -> list[Path]:
    return sorted(SYSTEMD.glob("emailsys*"))


def read_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def exec_start(unit: configparser.ConfigParser) -> list[str]:
    """ExecStart as the program sees it: systemd's %% escape undone."""
    return [arg.replace("%%", "%") for arg in shlex.split(unit["Service"]["ExecStart"])]


def fake_root(tmp_path: Path, units: list[Path]) -> Path:
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True)
    bin_dir = root / VENV_BIN.lstrip("/")
    bin_dir.mkdir(parents=True)
    for program in ("python", "celery", "daphne"):
        (bin_dir / program).write_text("#!/bin/sh\n")
        (bin_dir / program).chmod(0o755)
    (root / "etc" / "emailsys").mkdir(parents=True)
    (root / "etc" / "emailsys" / "env").write_text("SECRET_KEY=only-for-verify\n")
    (root / "opt" / "emailsys" / "var").mkdir(parents=True)
    system = root / "etc" / "systemd" / "system"
    system.mkdir(parents=True)
    for unit in units:
        shutil.copy(unit, system / unit.name)
    return root


def verify(root: Path, names: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", f"--root={root}", "--man=no", *names],
        cwd=root / "etc" / "systemd" / "system",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_systemd_analyze_verify_accepts_every_unit_and_rejects_a_broken_one(tmp_path) -> None:
    units = unit_files()
    root = fake_root(tmp_path, units)
    result = verify(root, [unit.name for unit in units])
    assert (result.returncode, result.stderr.strip()) == (0, ""), result.stderr
    # The same check fails on what a typo in the VM install would give: a program that is not there.
    broken = root / "etc" / "systemd" / "system" / "emailsys-broken.service"
    broken.write_text((SYSTEMD / "emailsys-beat.service").read_text().replace("/.venv/bin/celery", "/.venv/bin/celeri"))
    result = verify(root, [broken.name])
    assert result.returncode != 0 and "celeri is not executable" in result.stderr


def test_every_procfile_role_has_a_unit_running_its_program() -> None:
    roles = deployable_roles()
    names = {path.name for path in unit_files()}
    assert names == {f"emailsys-{role}.service" for role in roles} | {"emailsys-migrate.service", "emailsys.target"}
    for role, procfile in roles.items():
        args = exec_start(read_unit(SYSTEMD / f"emailsys-{role}.service"))
        assert args[0] == f"{VENV_BIN}/{procfile[0]}", role
        assert program_of([procfile[0], *args[1:]]) == program_of(procfile), f"{role}: {args} vs {procfile}"
        if "worker" in procfile:
            assert worker_queues(args) == worker_queues(procfile), role
            assert option_value(args, "-n", "--hostname") == option_value(procfile, "-n", "--hostname"), role
            assert option_value(args, "-P", "--pool") == option_value(procfile, "-P", "--pool"), role


@pytest.mark.parametrize("path", [p for p in unit_files() if p.suffix == ".service"], ids=lambda p: p.stem)
def test_unit_runs_hardened_as_emailsys_logs_to_the_journal_and_stops_gracefully(path: Path) -> None:
    unit = read_unit(path)
    service = unit["Service"]
    assert (service["User"], service["Group"]) == ("emailsys", "emailsys")
    assert service["EnvironmentFile"] == "/etc/emailsys/env" and service["WorkingDirectory"] == "/opt/emailsys"
    assert "DJANGO_SETTINGS_MODULE=emailsys.settings.production" in service["Environment"].split()
    for key, value in {
        "ProtectSystem": "strict",
        "ReadWritePaths": "/opt/emailsys/var",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "CapabilityBoundingSet": "",
        "StandardOutput": "journal",
        "StandardError": "journal",
    }.items():
        assert service[key] == value, f"{path.name}: {key}"
    assert unit["Install"]["WantedBy"] == "emailsys.target" and unit["Unit"]["PartOf"] == "emailsys.target"
    if path.stem == "emailsys-migrate":
        assert service["Type"] == "oneshot" and service["RemainAfterExit"] == "yes"
        return
    assert service["Restart"] == "always"
    assert unit["Unit"]["Requires"] == "emailsys-migrate.service", "no role runs before the schema is migrated"
    assert service["KillSignal"] == "SIGTERM" and service["KillMode"] == "mixed"
    if "worker" in exec_start(unit):
        assert int(service["TimeoutStopSec"]) >= settings.CELERY_TASK_TIME_LIMIT + 30, "the warm shutdown's wait"
    else:
        assert 30 <= int(service["TimeoutStopSec"]) <= 60
