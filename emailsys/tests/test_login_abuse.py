"""Login and API abuse: brute-force lockout of the admin login and the API's token login (django-axes), the
client address behind proxies, and API throttling (DRF), all with the settings as they ship."""

import pytest
from asgiref.sync import async_to_sync
from axes.models import AccessAttempt
from django.conf import settings
from django.core.cache import cache
from django.db.models import F
from django.test import AsyncClient, RequestFactory

from emailsys.auth import client_ip

pytestmark = pytest.mark.django_db

LOCKED = "Too many failed logins for this username from this address"


@pytest.fixture(autouse=True)
def _throttle_history_cleared() -> None:
    cache.clear()


def cool_off_passes() -> None:
    """As if AXES_COOLOFF_MINUTES went by: axes measures the cool-off from the last failure's stored time."""
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - settings.AXES_COOLOFF_TIME)


def admin_login(client, password: str, **extra):
    return client.post(
        "/admin/login/?next=/admin/", {"username": "admin", "password": password, "next": "/admin/"}, **extra
    )


def test_twenty_wrong_admin_passwords_lock_the_login_even_for_the_right_one_until_the_cool_off(
    client, admin_user
) -> None:
    statuses = []
    for attempt in range(20):
        # A forged X-Forwarded-For per guess changes nothing: no proxy is trusted by default.
        response = admin_login(client, f"wrong-{attempt}", HTTP_X_FORWARDED_FOR=f"198.51.100.{attempt}")
        statuses.append(response.status_code)

    assert statuses == [200] * (settings.AXES_FAILURE_LIMIT - 1) + [429] * (21 - settings.AXES_FAILURE_LIMIT)
    right = admin_login(client, "password")
    assert right.status_code == 429
    page = right.content.decode()
    assert LOCKED in page and "Try again in 15 minutes" in page and 'id="login-locked"' in page
    assert right["Retry-After"] == "900"
    assert client.get("/admin/").status_code == 302  # not logged in

    cool_off_passes()
    response = admin_login(client, "password")

    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    assert not AccessAttempt.objects.exists()  # a success forgets the failures


def test_a_wrong_admin_password_below_the_limit_is_the_usual_form_error(client, admin_user) -> None:
    response = admin_login(client, "wrong")

    assert response.status_code == 200
    assert "Please enter the correct username and password" in response.content.decode()


def test_a_locked_pair_is_listed_in_the_admin_and_deleting_it_unlocks(admin_client, client, admin_user) -> None:
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        admin_login(client, f"wrong-{attempt}")
    assert admin_login(client, "password").status_code == 429

    listing = admin_client.get("/admin/axes/accessattempt/?locked_out=yes").content.decode()

    assert "admin" in listing and "127.0.0.1" in listing
    attempt = AccessAttempt.objects.get()
    confirm = admin_client.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert confirm.status_code == 302
    assert admin_login(client, "password").status_code == 302


def test_the_lockout_is_per_username_and_address(client, admin_user, django_user_model) -> None:
    django_user_model.objects.create_superuser(username="other", password="other-password")
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        admin_login(client, f"wrong-{attempt}")
    assert admin_login(client, "password").status_code == 429

    other = client.post("/admin/login/?next=/admin/", {"username": "other", "password": "other-password"})
    from_elsewhere = admin_login(client.__class__(REMOTE_ADDR="203.0.113.7"), "password")

    assert other.status_code == 302
    assert from_elsewhere.status_code == 302


def api_login(client: AsyncClient, password: str):
    """Through the ASGI handler, as daphne serves it (axes' middleware answers there in its async path)."""
    return async_to_sync(client.post)(
        "/api/v1/auth/login/", {"username": "admin", "password": password}, content_type="application/json"
    )


def test_twenty_wrong_api_passwords_lock_the_token_login_with_a_json_429_until_the_cool_off(admin_user) -> None:
    client = AsyncClient()
    answers = [api_login(client, f"wrong-{attempt}") for attempt in range(20)]

    assert [answer.status_code for answer in answers[: settings.AXES_FAILURE_LIMIT - 1]] == [400] * 4
    assert {answer.status_code for answer in answers[settings.AXES_FAILURE_LIMIT - 1 :]} == {429}
    right = api_login(client, "password")
    assert right.status_code == 429
    assert right["Content-Type"] == "application/json" and right["Retry-After"] == "900"
    assert right.json() == {
        "detail": f"{LOCKED}. Try again in 15 minutes, or ask an administrator to unlock it.",
    }

    cool_off_passes()
    response = api_login(client, "password")

    assert response.status_code == 201
    token = response.json()["token"]
    campaigns = async_to_sync(client.get)("/api/v1/campaigns/", headers={"Authorization": f"Token {token}"})
    assert campaigns.status_code == 200


def test_forwarded_for_is_read_only_from_as_many_proxies_as_are_trusted(settings) -> None:
    forwarded = RequestFactory(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 198.51.100.9").get("/")
    garbage = RequestFactory(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="not-an-address").get("/")

    assert client_ip(forwarded) == "10.0.0.2"  # as shipped: no proxy trusted, the header is the client's word
    settings.TRUSTED_PROXY_COUNT = 1
    assert client_ip(forwarded) == "198.51.100.9"  # what our proxy saw; the client's own entry is ignored
    assert client_ip(garbage) == "10.0.0.2"
    settings.TRUSTED_PROXY_COUNT = 2
    assert client_ip(forwarded) == "6.6.6.6"


def test_anonymous_api_requests_past_the_rate_get_a_json_429_with_retry_after(client) -> None:
    """The token login is the API's anonymous endpoint; each guess uses a new username, so only the rate stops
    them (axes locks a username+address pair)."""
    statuses = [
        client.post(
            "/api/v1/auth/login/", {"username": f"guess-{n}", "password": "x"}, content_type="application/json"
        ).status_code
        for n in range(61)
    ]

    assert statuses == [400] * 60 + [429]  # anonymous: 60/minute
    throttled = client.post("/api/v1/auth/login/", {"username": "u", "password": "x"}, content_type="application/json")
    assert throttled.status_code == 429
    assert 0 < int(throttled["Retry-After"]) <= 60
    assert throttled.json()["detail"].startswith("Request was throttled.")
    assert client.post("/api/v1/auth/login/", {}, REMOTE_ADDR="203.0.113.8").status_code == 400  # per address
