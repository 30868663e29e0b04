"""API tokens: made by the login endpoint, the admin or a command, shown once, stored as digests, with expiry."""

import importlib
import re
import secrets
from datetime import timedelta
from io import StringIO

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone
from knox.models import AuthToken

from emailsys.testing import api_authorization

pytestmark = pytest.mark.django_db

tokens_migration = importlib.import_module("emailsys.migrations.0005_api_tokens_hashed")


@pytest.fixture(autouse=True)
def _throttle_history_cleared() -> None:
    cache.clear()


def login(client, username: str, password: str, **extra):
    return client.post(
        "/api/v1/auth/login/", {"username": username, "password": password}, content_type="application/json", **extra
    )


def campaigns_status(client, token: str) -> int:
    return client.get("/api/v1/campaigns/", HTTP_AUTHORIZATION=f"Token {token}").status_code


def stored_token_values() -> list[str]:
    """Every value the token table holds, as text."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT digest, token_key, user_id::text, created::text, expiry::text FROM knox_authtoken")
        return [value for row in cursor.fetchall() for value in row if value]


def test_the_login_endpoint_gives_a_token_that_works_and_is_stored_only_as_a_digest(client, admin_user) -> None:
    response = login(client, "admin", "password")

    assert response.status_code == 201, response.content
    body = response.json()
    assert response["Cache-Control"] == "no-store"
    assert body["username"] == "admin" and len(body["token"]) == 64
    expiry = timezone.datetime.fromisoformat(body["expiry"])
    assert abs(expiry - (timezone.now() + timedelta(days=90))) < timedelta(minutes=1)  # API_TOKEN_TTL_DAYS
    assert campaigns_status(client, body["token"]) == 200
    stored = stored_token_values()
    assert stored and not any(body["token"] in value for value in stored)
    assert body["token"][:15] in stored  # knox's lookup prefix, 15 of 64 hex characters, is all that is kept
    assert "authtoken_token" not in connection.introspection.table_names()


def test_a_wrong_password_a_non_staff_user_or_bad_input_is_a_json_400(client, admin_user, django_user_model) -> None:
    django_user_model.objects.create_user(username="clerk", password="clerk-password")
    refused = "Enter the correct username and password of a staff account."

    assert login(client, "admin", "wrong").json() == {"non_field_errors": [refused]}
    assert login(client, "clerk", "clerk-password").json() == {"non_field_errors": [refused]}
    missing = client.post("/api/v1/auth/login/", {"username": "admin"}, content_type="application/json")
    assert missing.status_code == 400 and missing.json() == {"password": ["This field is required."]}
    nul = login(client, "ad\x00min", "password")
    assert nul.status_code == 400 and "username" in nul.json()
    assert AuthToken.objects.count() == 0


def test_an_expired_token_is_refused_with_401(client, admin_user) -> None:
    token = login(client, "admin", "password").json()["token"]
    AuthToken.objects.update(expiry=timezone.now() - timedelta(seconds=1))  # 90 days later

    response = client.get("/api/v1/campaigns/", HTTP_AUTHORIZATION=f"Token {token}")

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}


@pytest.mark.parametrize("header", ["Token é", "Token \u00ff\u00fe", "Token ab\x00cd", "Token a b", "Token"])
def test_a_malformed_token_is_a_json_401_not_a_500(client, admin_user, header: str) -> None:
    response = client.get("/api/v1/campaigns/", HTTP_AUTHORIZATION=header)

    assert response.status_code == 401
    assert "token" in response.json()["detail"].lower()


def test_logout_revokes_only_the_token_it_is_called_with(client, admin_user) -> None:
    first, second = (login(client, "admin", "password").json()["token"] for _ in range(2))

    response = client.post("/api/v1/auth/logout/", HTTP_AUTHORIZATION=f"Token {first}")

    assert response.status_code == 204
    assert campaigns_status(client, first) == 401
    assert campaigns_status(client, second) == 200


def test_a_drf_token_from_before_the_migration_still_works_and_its_plaintext_is_gone(client, admin_user) -> None:
    """The state a database had under rest_framework.authtoken: its table, a 40-character token, its records."""
    key = secrets.token_hex(20)
    with connection.cursor() as cursor:
        cursor.execute(
            'CREATE TABLE "authtoken_token" ("key" varchar(40) PRIMARY KEY, "created" timestamptz NOT NULL,'
            ' "user_id" integer NOT NULL UNIQUE REFERENCES "auth_user" ("id") DEFERRABLE INITIALLY DEFERRED)'
        )
        created = timezone.now() - timedelta(days=400)
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, %s, %s)", [key, created, admin_user.pk])
        cursor.execute("INSERT INTO django_migrations (app, name, applied) VALUES ('authtoken', '0001_initial', now())")
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # as if committed long ago: no check left pending
    assert campaigns_status(client, key) == 401  # not yet migrated: knox does not know it

    from django.apps import apps

    with connection.schema_editor() as editor:
        tokens_migration.drf_tokens_hash(apps, editor)

    assert campaigns_status(client, key) == 200
    migrated = AuthToken.objects.get()
    assert migrated.user == admin_user and migrated.expiry is None
    assert migrated.created < timezone.now() - timedelta(days=399)
    assert not any(key in value for value in stored_token_values())
    assert "authtoken_token" not in connection.introspection.table_names()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM django_migrations WHERE app = 'authtoken'")
        assert cursor.fetchone() == (0,)


def test_the_migration_does_nothing_on_a_database_that_never_had_drf_tokens() -> None:
    from django.apps import apps

    with connection.schema_editor() as editor:
        tokens_migration.drf_tokens_hash(apps, editor)

    assert AuthToken.objects.count() == 0


def test_the_admin_shows_a_new_token_once_and_lists_tokens_without_their_value(admin_client, admin_user) -> None:
    form = admin_client.get("/admin/knox/authtoken/add/").content.decode()
    assert 'name="user"' in form and 'name="expires"' in form and "default (API_TOKEN_TTL_DAYS)" in form

    page = admin_client.post("/admin/knox/authtoken/add/", {"user": admin_user.pk, "expires": "30"})

    assert page.status_code == 200, page.content.decode()[:2000]
    assert "no-store" in page["Cache-Control"]
    text = page.content.decode()
    value = re.search(r'id="api-token-value"[^>]*>([0-9a-f]{64})<', text).group(1)
    assert "not shown again" in text
    assert campaigns_status(admin_client.__class__(), value) == 200
    token = AuthToken.objects.get()
    assert abs(token.expiry - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)

    listing = admin_client.get("/admin/knox/authtoken/").content.decode()
    detail = admin_client.get(f"/admin/knox/authtoken/{token.pk}/change/").content.decode()
    for shown in (listing, detail):
        assert value[:8] in shown
        assert value not in shown and value[:15] not in shown  # (the digest is its primary key, in links)
    assert 'name="user"' not in detail  # view only: a token is made or deleted, never edited


def test_create_api_token_prints_the_value_once_and_reads_the_expiry(client, admin_user) -> None:
    out, err = StringIO(), StringIO()
    call_command("create_api_token", "admin", "--expires", "1d12h", stdout=out, stderr=err)

    value = out.getvalue().strip()
    assert campaigns_status(client, value) == 200
    assert "Shown once" in err.getvalue()
    token = AuthToken.objects.get()
    assert abs(token.expiry - (timezone.now() + timedelta(hours=36))) < timedelta(minutes=1)

    call_command("create_api_token", "admin", "--expires", "never", stdout=StringIO(), stderr=StringIO())
    assert AuthToken.objects.filter(expiry__isnull=True).count() == 1
    with pytest.raises(CommandError, match="--expires: '30 days' is not a duration"):
        call_command("create_api_token", "admin", "--expires", "30 days")
    with pytest.raises(CommandError, match="No user 'nobody'"):
        call_command("create_api_token", "nobody")


def test_the_test_helper_makes_a_token_the_api_accepts(client, admin_user) -> None:
    response = client.get("/api/v1/campaigns/", HTTP_AUTHORIZATION=api_authorization(admin_user))

    assert response.status_code == 200
    assert AuthToken.objects.get().user == admin_user


def test_the_demo_shows_the_admins_api_token_once(client, admin_user) -> None:
    from emailsys.demo import demo_load

    first = demo_load()
    value = re.search(r"Authorization: Token ([0-9a-f]{64})$", first).group(1)
    assert campaigns_status(client, value) == 200
    again = demo_load()
    assert value not in again and "python manage.py create_api_token admin" in again
    assert AuthToken.objects.count() == 1
