"""Health of ONE process of a role, for Kubernetes exec probes and scripts: prints one line and exits 0 when
healthy, 1 when not (the line says why). /healthz answers for the whole system; this answers for the process
next to it, so an orchestrator restarts the right one.

    manage.py probe worker-<pool>   `celery inspect ping` of node <pool>@<this host> only (--node to name another)
    manage.py probe beat            beat's last scheduler tick is fresher than HEALTHZ_BEAT_MAX_AGE
    manage.py probe sqs-bridge      a bridge on this host beat recently (its loop, once per long poll)
    manage.py probe archiver        an archiver on this host beat within ARCHIVE_HEARTBEAT_MAX_AGE
    manage.py probe imap-idle       the IMAP IDLE supervisor on this host beat recently (once per settings refresh)

Heartbeats are keyed "<host>:<pid>" (emailsys.health.process_heartbeat_record): "this host" is the pod's or VM's
host name, which the probe shares with the process it checks.
"""

import socket

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from emailsys.celery import app as celery_app
from emailsys.health import (
    IMAP_IDLE_HEARTBEAT_MAX_AGE,
    ComponentHealth,
    beat_tick_age,
    process_heartbeat_health,
    sqs_bridge_health,
)
from emailsys.ops_clients import ops_broker_connection

HEARTBEAT_ROLES = ("sqs-bridge", "archiver", "imap-idle")


def probe_roles() -> list[str]:
    """Every role this command checks: one per worker pool (named as in the Procfile), beat and the loops."""
    return [*(f"worker-{pool}" for pool in settings.WORKER_POOLS), "beat", *HEARTBEAT_ROLES]


def worker_ping(*, node: str, timeout: float) -> ComponentHealth:
    """Pings only `node` (a broadcast with one destination), so a sibling pod answering does not count."""
    with ops_broker_connection() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
        # limit=1: return as soon as the one node answered, not after the whole timeout
        replies = celery_app.control.ping(destination=[node], timeout=timeout, limit=1, connection=conn)
    answered = [name for reply in replies or [] for name in reply]
    if node in answered:
        return ComponentHealth(node, True, f"{node} answered ping")
    return ComponentHealth(node, False, f"{node} did not answer ping within {timeout:g}s")


def beat_probe() -> ComponentHealth:
    age = beat_tick_age()
    limit = settings.HEALTHZ_BEAT_MAX_AGE
    if age is None:
        return ComponentHealth("beat", False, "beat has never ticked")
    return ComponentHealth("beat", age <= limit, f"last tick {age:.1f}s ago (limit {limit:.0f}s)")


class Command(BaseCommand):
    help = __doc__
    requires_system_checks = []  # a probe runs every few seconds: only what it checks

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("role", help="worker-<pool>, beat, sqs-bridge, archiver or imap-idle")
        parser.add_argument("--node", default="", help="worker node name (default: <pool>@<this host name>)")
        parser.add_argument("--host", default="", help="whose heartbeats count (default: this host name)")
        parser.add_argument("--timeout", type=float, default=5.0, help="seconds a worker has to answer the ping")
        parser.add_argument("--max-age", type=float, default=0.0, help="heartbeat age limit (default: the role's)")

    def handle(self, *args, role: str, node: str, host: str, timeout: float, max_age: float, **options) -> None:
        if role not in probe_roles():
            raise CommandError(f"unknown role {role!r}: one of {', '.join(probe_roles())}")
        host = host or socket.gethostname()
        try:
            health = self._probe(role, node=node, host=host, timeout=timeout, max_age=max_age)
        except Exception as error:  # noqa: BLE001 - an unreachable broker or Redis is an unhealthy answer
            health = ComponentHealth(role, False, f"{type(error).__name__}: {error}"[:300])
        self.stdout.write(f"{role}: {'healthy' if health.healthy else 'UNHEALTHY'}: {health.detail}")
        if not health.healthy:
            raise SystemExit(1)

    def _probe(self, role: str, *, node: str, host: str, timeout: float, max_age: float) -> ComponentHealth:
        if role.startswith("worker-"):
            return worker_ping(node=node or f"{role.removeprefix('worker-')}@{host}", timeout=timeout)
        if role == "beat":
            return beat_probe()
        if role == "sqs-bridge" and not max_age:
            return sqs_bridge_health(host=host)
        default_age = {
            "sqs-bridge": 0.0,
            "archiver": settings.ARCHIVE_HEARTBEAT_MAX_AGE,
            "imap-idle": IMAP_IDLE_HEARTBEAT_MAX_AGE,
        }[role]
        return process_heartbeat_health(role=role, max_age_seconds=max_age or default_age, host=host)
