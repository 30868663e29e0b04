"""The lock that lets only one beat tick: a PostgreSQL session-level advisory lock on a connection of its own.

Why an advisory lock rather than a lease row: PostgreSQL releases it the moment the session ends, so a beat killed
with -9 frees it as soon as the server sees the connection close (at once on a live host: the kernel closes the
socket) or, when the whole host vanishes, when TCP keepalives give up (about 11 s with the options below). A lease
row would need its expiry chosen against the tick interval and renewed on every tick, and a crashed holder would
keep it until the expiry.

Why a connection of its own (psycopg, not Django's): Django closes and reopens its connections whenever it likes
(CONN_MAX_AGE, health checks, `close_old_connections` in django-celery-beat's scheduler), and each close would drop
the lock silently. Behind pgbouncer in transaction mode a session lock means nothing (the next statement may run on
another server connection), so this connection goes straight to PostgreSQL: `BEAT_LOCK_DATABASE_URL` when set,
else the default database.

Advisory locks belong to one database: installations sharing a PostgreSQL server never block each other.
"""

import logging
import os
import socket

import psycopg
from django.conf import settings
from django.db import connection as django_connection

logger = logging.getLogger(__name__)

# One bigint: "emailsys" in ASCII. pg_locks shows it as classid 0x656D6169, objid 0x6C737973, objsubid 1.
BEAT_LOCK_KEY = 0x656D61696C737973
BEAT_APPLICATION_PREFIX = "emailsys-beat"
# The server ends a holder whose host went silent after idle + interval × count seconds of unanswered keepalives;
# the holder's own side gives up on an unacknowledged write after tcp_user_timeout. Both are per-session settings.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT, USER_TIMEOUT_MS = 5, 2, 3, 10_000
LIBPQ_OPTIONS_KEPT = ("sslmode", "sslrootcert", "sslcert", "sslkey", "target_session_attrs")


def beat_lock_conninfo() -> str:
    """libpq conninfo of the lock's connection: BEAT_LOCK_DATABASE_URL, else the default database's parameters."""
    if settings.BEAT_LOCK_DATABASE_URL:
        return settings.BEAT_LOCK_DATABASE_URL
    params = settings.DATABASES["default"]
    parts = {
        "dbname": params["NAME"],
        "user": params.get("USER") or None,
        "password": params.get("PASSWORD") or None,
        "host": params.get("HOST") or None,
        "port": str(params["PORT"]) if params.get("PORT") else None,
    }
    options = params.get("OPTIONS", {})
    parts.update({key: options.get(key) for key in LIBPQ_OPTIONS_KEPT})  # TLS as the ORM's connections have it
    return psycopg.conninfo.make_conninfo(**{key: str(value) for key, value in parts.items() if value})


class BeatLock:
    """The advisory lock, held by this process while `held` is true. A standby keeps its connection open and asks
    again on it (one cheap statement per retry). Not thread-safe: beat's loop is one thread."""

    def __init__(self) -> None:
        self.name = f"{BEAT_APPLICATION_PREFIX} {socket.gethostname()} pid {os.getpid()}"[:63]
        self.held = False
        self._connection: psycopg.Connection | None = None

    def _connect(self) -> psycopg.Connection:
        if self._connection is None or self._connection.closed:
            self._connection = psycopg.connect(
                beat_lock_conninfo(),
                autocommit=True,
                application_name=self.name,
                connect_timeout=5,
                keepalives=1,
                keepalives_idle=KEEPALIVE_IDLE,
                keepalives_interval=KEEPALIVE_INTERVAL,
                keepalives_count=KEEPALIVE_COUNT,
                tcp_user_timeout=USER_TIMEOUT_MS,
                options=(
                    f"-c tcp_keepalives_idle={KEEPALIVE_IDLE} -c tcp_keepalives_interval={KEEPALIVE_INTERVAL} "
                    f"-c tcp_keepalives_count={KEEPALIVE_COUNT} -c tcp_user_timeout={USER_TIMEOUT_MS}"
                ),
            )
        return self._connection

    def try_acquire(self) -> tuple[bool, dict | None]:
        """Takes the lock if nobody holds it: (acquired, the holder otherwise — None when unknown). Never raises:
        a database outage is a lock not taken."""
        if self.held:
            return True, None
        try:
            conn = self._connect()
            if conn.execute("SELECT pg_try_advisory_lock(%s)", [BEAT_LOCK_KEY]).fetchone()[0]:
                self.held = True
                return True, None
            return False, _holder(conn)
        except psycopg.Error as error:
            logger.warning("beat lock: PostgreSQL did not answer (%s); retrying", str(error).strip()[:200])
            self.release()
            return False, None

    def still_held(self) -> bool:
        """A round trip on the lock's connection: while its session lives, the lock is ours. On a broken connection
        the lock is gone (PostgreSQL released it, or will when it notices), so it is dropped here too."""
        if not self.held:
            return False
        try:
            self._connection.execute("SELECT 1")
            return True
        except psycopg.Error as error:
            logger.error("beat lock: lost (its connection failed: %s); this beat stops ticking", str(error)[:200])
            self.release()
            return False

    def release(self) -> None:
        """Ends the session, which releases the lock (no unlock statement needed, nor possible on a dead one)."""
        conn, self._connection, self.held = self._connection, None, False
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass


HOLDER_SQL = (
    "SELECT a.application_name, host(a.client_addr), a.backend_start FROM pg_locks l "
    "JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.classid = %s AND l.objid = %s "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
HOLDER_PARAMS = [BEAT_LOCK_KEY >> 32, BEAT_LOCK_KEY & 0xFFFFFFFF]


def _holder_of(row) -> dict | None:
    if row is None:
        return None
    name, address, since = row
    return {"name": name, "client_addr": address, "since": since.isoformat()}


def _holder(conn: psycopg.Connection) -> dict | None:
    return _holder_of(conn.execute(HOLDER_SQL, HOLDER_PARAMS).fetchone())


def beat_lock_holder() -> dict | None:
    """Who holds the beat lock now (name: "emailsys-beat <host> pid <pid>", client_addr, since), or None; read from
    pg_locks and pg_stat_activity on Django's connection (for /healthz)."""
    with django_connection.cursor() as cursor:
        cursor.execute(HOLDER_SQL, HOLDER_PARAMS)
        return _holder_of(cursor.fetchone())
