"""Keeps the deployment files honest: docker-compose.yml, the Procfile and the Dockerfile must run commands that
exist, cover every worker pool exactly once, and set only environment variables the settings read and the README
documents. No database, no Docker: the files are parsed and checked against the code.
"""

import json
import re
import shlex
import shutil
import sys
from importlib.util import find_spec
from pathlib import Path
from pkgutil import resolve_name

import pytest
import yaml
from celery.bin.celery import celery as celery_cli
from django.conf import settings
from django.core.management import get_commands

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
PROCFILE = ROOT / "Procfile"
DOCKERFILE = ROOT / "Dockerfile"
README = ROOT / "README.md"
SETTINGS_DIR = ROOT / "emailsys" / "settings"
VENV_BIN = Path(sys.executable).parent

ASGI_TARGET = "emailsys.asgi:application"
CELERY_APP = "emailsys"
# Set on app containers without being read by emailsys/settings: Django reads it to find the settings.
NOT_READ_BY_SETTINGS = {"DJANGO_SETTINGS_MODULE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}  # and boto3 these

README_ENV_ROW = re.compile(r"^\|\s*`([A-Z][A-Z0-9_]*)`")
SETTINGS_ENV_READ = re.compile(
    r"(?:\benv(?:\.(?:bool|int|float|list|path|db))?|os\.environ\.setdefault|os\.environ\.get)"
    r"""\(\s*["']([A-Z][A-Z0-9_]*)["']"""
)


# --- Parsing -----------------------------------------------------------------------------------------------------


def compose_services() -> dict[str, dict]:
    """Services with the `<<: *x-app` merges resolved (PyYAML applies merge keys)."""
    return yaml.safe_load(COMPOSE.read_text())["services"]


def compose_app_services() -> dict[str, dict]:
    """Services built from this project's image, i.e. the ones that run our code."""
    return {name: service for name, service in compose_services().items() if "build" in service}


SUPERVISED = re.compile(r"^python deploy/supervise\.py (?P<name>[\w-]+) -- (?P<command>.+)$")


def procfile_entries(path: Path | None = None) -> dict[str, str]:
    """`name: command` lines, the command as deploy/supervise.py runs it (every line runs under it, named after
    itself); blank lines and comments skipped."""
    path = path or PROCFILE
    entries: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, command = line.partition(":")
        supervised = SUPERVISED.match(command.strip())
        assert supervised and supervised["name"] == name.strip(), f"Procfile {name}: not under deploy/supervise.py"
        entries[name.strip()] = supervised["command"]
    return entries


def argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def healthcheck_argv(test: str | list[str]) -> list[str] | None:
    """The command a healthcheck runs (CMD or CMD-SHELL form); None for NONE."""
    if isinstance(test, str):
        return shlex.split(test)
    kind, *rest = test
    if kind == "CMD":
        return rest
    if kind == "CMD-SHELL":
        return shlex.split(rest[0])
    return None


def environment_names(environment: dict | list | None) -> set[str]:
    """Variable names from a compose `environment:` in either form (mapping or list of NAME=value)."""
    if not environment:
        return set()
    if isinstance(environment, dict):
        return set(environment)
    return {item.partition("=")[0] for item in environment}


def readme_env_names(path: Path | None = None) -> set[str]:
    """Names in the README's environment table: rows like | `VAR_NAME` | default | meaning |."""
    path = path or README
    if not path.is_file():
        pytest.fail(f"{path.name} not found: the environment table documents every variable")
    return {match[1] for line in path.read_text().splitlines() if (match := README_ENV_ROW.match(line))}


def settings_env_names(directory: Path | None = None) -> set[str]:
    """Every variable emailsys/settings/*.py reads: env(...), env.bool(...), ..., os.environ.get/setdefault(...)."""
    directory = directory or SETTINGS_DIR
    return {name for path in sorted(directory.glob("*.py")) for name in SETTINGS_ENV_READ.findall(path.read_text())}


def dockerfile_cmd(path: Path | None = None) -> list[str]:
    """The exec-form CMD (the last one wins, as in Docker)."""
    path = path or DOCKERFILE
    commands = [line.removeprefix("CMD").strip() for line in path.read_text().splitlines() if line.startswith("CMD ")]
    assert commands, "the Dockerfile has no CMD"
    return json.loads(commands[-1])


def worker_queues(args: list[str]) -> list[str]:
    """The queues a `celery worker` command line consumes (-Q x, -Qx, --queues x, --queues=x; comma lists split)."""
    queues: list[str] = []
    for index, arg in enumerate(args):
        if arg in ("-Q", "--queues"):
            value = args[index + 1]
        elif arg.startswith("--queues="):
            value = arg.removeprefix("--queues=")
        elif arg.startswith("-Q") and arg != "-Q":
            value = arg.removeprefix("-Q")
        else:
            continue
        queues.extend(value.split(","))
    return queues


def option_value(args: list[str], short: str, long: str) -> str | None:
    for index, arg in enumerate(args):
        if arg in (short, long):
            return args[index + 1]
        if arg.startswith(f"{long}="):
            return arg.partition("=")[2]
    return None


def is_celery_worker(args: list[str]) -> bool:
    return args[:1] == ["celery"] and "worker" in args


def routed_queues() -> set[str]:
    """Every queue a task can land on: the default queue plus each CELERY_TASK_ROUTES target."""
    routes = settings.CELERY_TASK_ROUTES
    route_list = routes if isinstance(routes, list | tuple) else [routes]
    queues = {settings.CELERY_TASK_DEFAULT_QUEUE}
    for router in route_list:
        assert isinstance(router, dict), f"cannot read queues from router {router!r}"
        queues |= {route["queue"] for route in router.values()}
    return queues


def all_commands() -> dict[str, list[str]]:
    """Every command line the compose file (commands and app healthchecks), the Procfile and the Dockerfile run."""
    commands = {"Dockerfile CMD": dockerfile_cmd()}
    for name, service in compose_app_services().items():
        if "command" in service:
            commands[f"compose {name}"] = argv(service["command"])
        test = (service.get("healthcheck") or {}).get("test")
        if test and (check := healthcheck_argv(test)):
            commands[f"compose {name} healthcheck"] = check
    for name, command in procfile_entries().items():
        commands[f"Procfile {name}"] = argv(command)
    return commands


# --- Worker pools ------------------------------------------------------------------------------------------------


def check_worker_pools(workers: dict[str, list[str]], source: str) -> None:
    """Each worker consumes exactly one pool's queues (in priority order), is named after it, and every pool has
    exactly one worker."""
    assert workers, f"{source}: no celery worker found"
    by_queue: dict[str, list[str]] = {}
    for name, args in workers.items():
        assert args[:3] == ["celery", "-A", CELERY_APP] and args[3] == "worker", f"{source} {name}: {args}"
        queues = worker_queues(args)
        queue = queues[0] if queues else ""
        assert queue in settings.WORKER_POOLS, f"{source} {name}: queue {queue!r} is not in WORKER_POOLS"
        expected = list(settings.WORKER_POOL_QUEUES[queue])
        assert queues == expected, f"{source} {name}: should consume {expected} in this order, consumes {queues}"
        assert name == f"worker-{queue}", f"{source} {name}: should be named worker-{queue}"
        node = option_value(args, "-n", "--hostname")
        assert node == f"{queue}@%h", f"{source} {name}: node name should be {queue}@%h, is {node}"
        by_queue.setdefault(queue, []).append(name)
    assert sorted(by_queue) == sorted(settings.WORKER_POOLS), f"{source}: pools without a worker"
    duplicated = {queue: names for queue, names in by_queue.items() if len(names) > 1}
    assert not duplicated, f"{source}: pools with more than one worker service: {duplicated}"
    consumed = {name for queue in by_queue for name in settings.WORKER_POOL_QUEUES[queue]}
    missing = routed_queues() - consumed
    assert not missing, f"{source}: tasks are routed to {sorted(missing)} but no worker consumes them"


def test_compose_workers_cover_every_pool_once() -> None:
    services = compose_app_services()
    workers = {name: argv(service["command"]) for name, service in services.items() if name.startswith("worker-")}
    strays = {
        name
        for name, service in services.items()
        if not name.startswith("worker-") and "command" in service and is_celery_worker(argv(service["command"]))
    }
    assert not strays, f"celery workers outside worker-* services: {strays}"
    check_worker_pools(workers, "docker-compose.yml")


def test_procfile_workers_cover_every_pool_once() -> None:
    entries = {name: argv(command) for name, command in procfile_entries().items()}
    workers = {name: args for name, args in entries.items() if is_celery_worker(args)}
    assert set(workers) == {name for name in entries if name.startswith("worker-")}
    check_worker_pools(workers, "Procfile")


def test_compose_and_procfile_run_the_same_pools() -> None:
    """Local runs and deployments must not drift: same worker names, same queues, same pool types."""
    compose = {name: argv(s["command"]) for name, s in compose_app_services().items() if name.startswith("worker-")}
    procfile = {name: argv(c) for name, c in procfile_entries().items() if name.startswith("worker-")}
    assert set(compose) == set(procfile)
    for name in compose:
        assert worker_queues(compose[name]) == worker_queues(procfile[name]), name
        pools = (option_value(compose[name], "-P", "--pool"), option_value(procfile[name], "-P", "--pool"))
        assert pools[0] == pools[1], f"{name}: pool {pools[0]} in compose, {pools[1]} in the Procfile"


# --- Commands exist ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", sorted(all_commands()))
def test_command_exists(source: str) -> None:
    """The program is installed, and what it is asked to run (management command, celery subcommand) exists."""
    args = all_commands()[source]
    program = args[0]
    assert program in ("celery", "daphne", "python", "moto_server"), f"{source}: unexpected program {program!r}"
    assert shutil.which(program, path=str(VENV_BIN)), f"{source}: {program} is not installed in {VENV_BIN}"
    if program == "python":
        if args[1:2] == ["manage.py"]:
            assert args[2] in get_commands(), f"{source}: no management command {args[2]!r}"
        else:
            assert args[1] == "-c", f"{source}: python runs {args[1:]}"
    elif program == "celery":
        assert args[1:3] == ["-A", CELERY_APP], f"{source}: celery must load the {CELERY_APP} app"
        assert args[3] in celery_cli.commands, f"{source}: no celery subcommand {args[3]!r}"
        if not source.endswith("healthcheck"):
            assert args[3] in ("worker", "beat", "flower"), f"{source}: runs celery {args[3]}"
    elif program == "moto_server":
        assert option_value(args, "-H", "--host") == "127.0.0.1", f"{source}: moto must listen on loopback only"
    else:
        targets = [arg for arg in args[1:] if re.fullmatch(r"[\w.]+:\w+", arg)]
        assert targets == [ASGI_TARGET], f"{source}: daphne serves {targets}"
        assert resolve_name(ASGI_TARGET) is not None


def test_compose_settings_modules_exist() -> None:
    """DJANGO_SETTINGS_MODULE on app containers names a settings module (found without importing it)."""
    for name, service in compose_app_services().items():
        module = service["environment"]["DJANGO_SETTINGS_MODULE"]
        assert find_spec(module) is not None, f"{name}: no module {module}"


def test_dockerfile_and_compose_web_serve_the_same_application() -> None:
    web = argv(compose_services()["web"]["command"])
    cmd = dockerfile_cmd()
    assert cmd[0] == web[0] == "daphne"
    assert cmd[-1] == web[-1] == ASGI_TARGET
    assert option_value(cmd, "-p", "--port") == option_value(web, "-p", "--port") == "8000"
    assert option_value(cmd, "-b", "--bind") == option_value(web, "-b", "--bind") == "0.0.0.0"  # noqa: S104 - in a container


# --- Environment -------------------------------------------------------------------------------------------------


def compose_app_env_names() -> set[str]:
    return set().union(*(environment_names(s.get("environment")) for s in compose_app_services().values()))


def test_settings_env_regex_finds_the_known_variables() -> None:
    """Guards the regex itself: if it stopped matching, the README checks below would pass vacuously."""
    found = settings_env_names()
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS", "SECURE_SSL_REDIRECT", "DEBUG"} <= found


def test_compose_sets_only_variables_the_settings_read() -> None:
    unread = compose_app_env_names() - settings_env_names() - NOT_READ_BY_SETTINGS
    assert not unread, f"docker-compose.yml sets variables nothing reads: {sorted(unread)}"


def test_compose_variables_are_documented_in_readme() -> None:
    undocumented = compose_app_env_names() - readme_env_names()
    assert not undocumented, f"README.md's environment table lacks {sorted(undocumented)}"


def test_settings_variables_are_documented_in_readme() -> None:
    undocumented = settings_env_names() - readme_env_names()
    assert not undocumented, f"README.md's environment table lacks {sorted(undocumented)}"


def test_the_web_processes_pool_defaults_do_not_leak_into_processes_started_after_importing_the_asgi_app() -> None:
    """A prefork worker started with DB_POOL_MAX_SIZE inherited from its parent's environment finds the pool its
    parent closed ("pool has already been opened/closed"): the web defaults hold only while the settings load."""
    import os

    import emailsys.asgi

    assert emailsys.asgi.WEB_DATABASE_DEFAULTS
    for name in emailsys.asgi.WEB_DATABASE_DEFAULTS:
        assert name not in os.environ, name
