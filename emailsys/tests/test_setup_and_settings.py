"""Setting a machine up: settings from the environment, the production deploy check, demo_setup."""

import json
import secrets
import subprocess
import sys
import uuid

import psycopg
import pytest
from cryptography.fernet import Fernet
from django.contrib.auth import authenticate
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import RequestFactory

from emailsys.services import admin_ensure, database_ensure_exists, services_unreachable
from emailsys.testing import BASE_DIR, free_port, subprocess_database_url


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    base_env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env={**base_env, **env}, capture_output=True, text=True
    )


def production_env(**overrides: str) -> dict[str, str]:
    """What a deployment must provide, with a fresh key; FIELD_ENCRYPTION_KEYS="" leaves the keys out."""
    env = {
        "DJANGO_SETTINGS_MODULE": "emailsys.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "mail.example.com",
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        **overrides,
    }
    return {name: value for name, value in env.items() if value}


@pytest.mark.parametrize("key_count", [1, 2])  # two: during a rotation, newest first
def test_production_settings_pass_the_deploy_check(key_count: int) -> None:
    keys = ",".join(Fernet.generate_key().decode() for _ in range(key_count))
    result = manage("check", "--deploy", "--fail-level", "WARNING", **production_env(FIELD_ENCRYPTION_KEYS=keys))
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_the_deploy_check_fails_without_field_encryption_keys() -> None:
    result = manage("check", "--deploy", **production_env(FIELD_ENCRYPTION_KEYS=""))
    assert result.returncode == 1
    assert "(emailsys.E001) FIELD_ENCRYPTION_KEYS is not set" in result.stderr
    assert "manage.py generate_encryption_key" in result.stderr
    # Without --deploy the process still starts (a missing key shows when a secret is first used).
    assert manage("check", **production_env(FIELD_ENCRYPTION_KEYS="")).returncode == 0


@pytest.mark.parametrize(
    ("keys", "bad_position"),
    [
        ("not-a-fernet-key", "key 1 of 1"),
        ("{valid},c2hvcnQ=", "key 2 of 2"),  # base64, but 5 bytes
        ("{valid},dGVzdC1rZXktMTYtYnl0ZQ==", "key 2 of 2"),  # 16 bytes: half a key
    ],
)
def test_the_deploy_check_fails_on_a_malformed_key_without_showing_it(keys: str, bad_position: str) -> None:
    keys = keys.format(valid=Fernet.generate_key().decode())
    result = manage("check", "--deploy", **production_env(FIELD_ENCRYPTION_KEYS=keys))
    assert result.returncode == 1
    assert f"(emailsys.E002) FIELD_ENCRYPTION_KEYS: {bad_position} is not a valid Fernet key" in result.stderr
    for key in keys.split(","):
        assert key not in result.stdout + result.stderr


def test_production_settings_refuse_debug() -> None:
    result = manage("check", **production_env(DEBUG="true"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "Configuration error: DEBUG must be off with production settings (emailsys.settings.production)."
    )


PUBLIC_PAGES_SCRIPT = """
import json, uuid, django
django.setup()
from django.test import Client
client = Client(headers={"X-Forwarded-Proto": "https"})  # as the TLS proxy forwards it
requests = [
    ("mail.example.com", "get", "/u/not-a-token/"),
    ("mail.example.com", "get", f"/u/{uuid.uuid4()}/"),
    ("mail.example.com", "post", f"/u/{uuid.uuid4()}/"),
    ("mail.example.com", "get", f"/w/u/{uuid.uuid4()}/"),
    ("mail.example.com", "get", "/w/nothing-here"),
    ("mail.example.com", "get", "/u/%ED%A0%80/"),
    ("evil.example", "get", f"/u/{uuid.uuid4()}/"),
]
answers = []
for host, method, path in requests:
    response = getattr(client, method)(path, headers={"Host": host})
    answers.append({"path": path, "host": host, "status": response.status_code, "body": response.content.decode()})
print(json.dumps(answers))
"""


@pytest.mark.django_db
def test_public_urls_answer_plain_error_pages_in_production() -> None:
    """No technical 404/400 page (URL patterns, settings, tracebacks) on the addresses anyone on the internet has."""
    result = subprocess.run(
        [sys.executable, "-c", PUBLIC_PAGES_SCRIPT],
        cwd=BASE_DIR, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", **production_env(DATABASE_URL=subprocess_database_url())},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    statuses = {(answer["host"], answer["path"].split("/")[1], answer["status"]) for answer in answers}
    assert statuses == {("mail.example.com", "u", 404), ("mail.example.com", "w", 404), ("evil.example", "u", 400)}
    for answer in answers:
        body = answer["body"]
        assert len(body) < 400, answer
        for leak in ("URLconf", "DEBUG", "Traceback", "SECRET_KEY", "settings", "emailsys.urls", "not valid"):
            assert leak not in body, answer


def test_production_without_secret_key_is_a_clear_error_not_a_traceback() -> None:
    result = manage("check", DJANGO_SETTINGS_MODULE="emailsys.settings.production")
    assert result.returncode == 2
    assert result.stderr.strip() == "Configuration error: Set the SECRET_KEY environment variable"


def test_local_settings_work_without_any_environment() -> None:
    result = manage("check")
    assert result.returncode == 0, result.stderr


def test_the_mail_capture_directory_falls_back_to_its_old_name_outbox_dir() -> None:
    show = ("shell", "--no-imports", "-c", "from django.conf import settings; print(settings.MAIL_CAPTURE_DIR)")

    assert manage(*show).stdout.strip() == str(BASE_DIR / "var" / "captured")
    assert manage(*show, OUTBOX_DIR="/tmp/old-outbox").stdout.strip() == "/tmp/old-outbox"
    both = manage(*show, OUTBOX_DIR="/tmp/old-outbox", MAIL_CAPTURE_DIR="/tmp/captured")
    assert both.stdout.strip() == "/tmp/captured"


def test_unreachable_services_are_named_with_their_address(settings) -> None:
    port = free_port()
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{port}//"
    problems = services_unreachable()
    assert [(p.name, p.address) for p in problems] == [
        ("Redis", f"127.0.0.1:{port}"),
        ("Celery broker", f"127.0.0.1:{port}"),
    ]
    with pytest.raises(CommandError) as error:
        call_command("demo_setup")
    assert f"Redis is not answering at 127.0.0.1:{port}" in str(error.value)
    assert "docker compose up -d postgres redis" in str(error.value)


def test_database_is_created_when_missing(settings) -> None:
    name = f"emailsys_created_{uuid.uuid4().hex[:8]}"
    database = {**settings.DATABASES["default"], "NAME": name}
    try:
        assert database_ensure_exists(database=database) is True
        assert database_ensure_exists(database=database) is False
    finally:
        admin = psycopg.connect(dbname="postgres", user="postgres", host="127.0.0.1")
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


@pytest.mark.django_db
def test_admin_user_always_has_the_printed_password() -> None:
    admin_ensure(username="admin", password="first-password", email="a@example.com")
    admin_ensure(username="admin", password="second-password", email="a@example.com")
    # With the request, as every login passes it (django-axes counts failures per username and address).
    user = authenticate(RequestFactory().post("/admin/login/"), username="admin", password="second-password")
    assert user is not None and user.is_staff and user.is_superuser
