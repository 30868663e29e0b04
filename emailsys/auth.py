"""Who is knocking: the client's address (one rule for login lockouts and API throttles), the answer to a
locked-out login (django-axes calls both, see settings "Login and API abuse") and the API's token check."""

import ipaddress

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from rest_framework.exceptions import AuthenticationFailed


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: the connection's, or behind TRUSTED_PROXY_COUNT proxies the entry of
    X-Forwarded-For that the outermost trusted proxy added (DRF's NUM_PROXIES rule, so throttles agree).

    Without trusted proxies the header is ignored: a client could otherwise pick a new address per guess. An
    entry that is no IP address (a misconfigured proxy) falls back to the connection's address."""
    remote = request.META.get("REMOTE_ADDR")
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    proxies = settings.TRUSTED_PROXY_COUNT
    addresses = [part.strip() for part in forwarded.split(",") if part.strip()]
    if proxies <= 0 or not addresses:
        return remote
    candidate = addresses[-min(proxies, len(addresses))]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote


def lockout_response(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    """429 for a username+address pair past AXES_FAILURE_LIMIT: JSON with Retry-After for the API, the admin's
    own page otherwise. Every failure while locked restarts the cool-off, so the wait is the whole cool-off."""
    wait = settings.AXES_COOLOFF_TIME
    minutes = max(1, round(wait.total_seconds() / 60))
    message = (
        f"Too many failed logins for this username from this address. Try again in {minutes} minutes, "
        "or ask an administrator to unlock it."
    )
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": message}, status=429)
    else:
        context = {**admin.site.each_context(request), "title": "Login locked", "message": message}
        response = render(request, "admin/login_locked.html", context, status=429)
    response["Retry-After"] = str(int(wait.total_seconds()))
    return response


class TokenAuthentication(KnoxTokenAuthentication):
    """knox's token check (`Authorization: Token <value>`), refusing with a 401 what knox would answer with a 500:
    a value that is not UTF-8 (knox decodes it unguarded) or holds a NUL (PostgreSQL refuses it in a query).
    Tokens are hexadecimal, so neither can be one."""

    def authenticate_credentials(self, token: bytes):
        try:
            text = token.decode("utf-8")
        except UnicodeDecodeError:
            raise AuthenticationFailed("Invalid token.") from None
        if "\x00" in text:
            raise AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(token)


class TokenScheme(KnoxTokenScheme):
    """The OpenAPI security scheme of our token check: knox's, which names knox's class only."""

    target_class = "emailsys.auth.TokenAuthentication"
