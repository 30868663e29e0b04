"""Operations services: bringing a machine's database to life, the demo admin account and API tokens."""

import socket
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import psycopg
from django.conf import settings
from django.contrib.auth import get_user_model
from knox.models import AuthToken
from knox.settings import knox_settings
from psycopg import sql


@dataclass(frozen=True)
class ServiceProblem:
    name: str
    address: str
    detail: str


def _tcp_answers(host: str, port: int, timeout: float = 2.0) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as error:
        return str(error)


def services_unreachable() -> list[ServiceProblem]:
    """PostgreSQL, Redis and the broker each answer on their port, or are reported with their address."""
    database = settings.DATABASES["default"]
    targets = [("PostgreSQL", database.get("HOST") or "127.0.0.1", int(database.get("PORT") or 5432))]
    for name, url in (("Redis", settings.REDIS_URL), ("Celery broker", settings.CELERY_BROKER_URL)):
        parts = urlsplit(url)
        default_port = 5672 if parts.scheme.startswith("amqp") else 6379
        targets.append((name, parts.hostname or "127.0.0.1", parts.port or default_port))
    problems = []
    for name, host, port in dict.fromkeys(targets):
        error = _tcp_answers(host, port)
        if error:
            problems.append(ServiceProblem(name, f"{host}:{port}", error))
    return problems


def database_ensure_exists(*, database: dict) -> bool:
    """Creates the database described by a Django DATABASES entry when missing, connecting to the `postgres`
    maintenance database with the same credentials. Returns True when it had to create it.
    """
    params = {
        "dbname": "postgres",
        "user": database.get("USER") or None,
        "password": database.get("PASSWORD") or None,
        "host": database.get("HOST") or None,
        "port": database.get("PORT") or None,
        "connect_timeout": 5,
    }
    connection = psycopg.connect(**{k: v for k, v in params.items() if v is not None})
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database["NAME"]])
            if cursor.fetchone():
                return False
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database["NAME"])))
            return True
    finally:
        connection.close()


def admin_ensure(*, username: str, password: str, email: str):
    """The demo's superuser, with exactly the given password (so printed credentials always work)."""
    user, _ = get_user_model().objects.get_or_create(username=username, defaults={"email": email})
    user.email = email
    user.is_staff = user.is_superuser = user.is_active = True
    user.set_password(password)
    user.save()
    return user


def api_token_ttl_default() -> timedelta | None:
    """How long a new API token is valid unless its maker says otherwise (API_TOKEN_TTL_DAYS; None: forever)."""
    return knox_settings.TOKEN_TTL


def api_token_create(*, user, expires_in: timedelta | None) -> tuple[AuthToken, str]:
    """A new API token of `user` and its value. Only a digest is stored: the caller shows the value once (the
    login response, the admin's page after "add", `create_api_token`), and nobody can show it again."""
    return AuthToken.objects.create(user=user, expiry=expires_in)
