"""Setting a machine up: settings from the environment, the production deploy check, demo_setup."""

import secrets
import subprocess
import sys
import uuid

import psycopg
import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import RequestFactory

from emailsys.services import admin_ensure, database_ensure_exists, services_unreachable
from emailsys.testing import BASE_DIR, free_port


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    base_env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env={**base_env, **env}, capture_output=True, text=True
    )


def test_production_settings_pass_the_deploy_check() -> None:
    result = manage(
        "check", "--deploy", "--fail-level", "WARNING",
        DJANGO_SETTINGS_MODULE="emailsys.settings.production",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="mail.example.com",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


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
