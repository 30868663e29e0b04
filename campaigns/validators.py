"""Where an account's secrets may go, as rules on hosts and URLs (the policy is in
`campaigns.services.destinations`). Here, without the models, so that `SenderAccount.clean` can apply them."""

import ipaddress
from functools import lru_cache
from urllib.parse import SplitResult, urlsplit

from django.conf import settings
from django.db.models import Model


def host_normalized(host: str) -> str:
    return host.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")


def smtp_plaintext_auth_allowed(host: str) -> bool:
    """Whether AUTH may go over an unencrypted connection to `host`: loopback, or `SMTP_PLAINTEXT_AUTH_HOSTS`."""
    return plaintext_auth_allowed(host, tuple(settings.SMTP_PLAINTEXT_AUTH_HOSTS))


@lru_cache(maxsize=1024)  # the answer for a host and a setting never changes; parsing costs ~25 µs
def plaintext_auth_allowed(host: str, allowed_hosts: tuple[str, ...]) -> bool:
    """Whether a login may go unencrypted to `host`: loopback (taken as written, never resolved) or one of
    `allowed_hosts` (SMTP's and IMAP's settings)."""
    name = host_normalized(host)
    if name == "localhost" or name in {host_normalized(allowed) for allowed in allowed_hosts}:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _split(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return None
    return parts


def esp_endpoint_allowed(url: str) -> bool:
    """Whether an ESP endpoint override is in `ESP_ENDPOINT_ALLOWLIST`. An entry `scheme://host` allows any port
    of that host, `scheme://host:port` that port only, and a path in an entry must begin the URL's path. A URL
    with a user name or password in it is never allowed."""
    return _endpoint_allowed(url, tuple(settings.ESP_ENDPOINT_ALLOWLIST))


@lru_cache(maxsize=1024)  # checked before every ESP request: ~2 µs cached instead of ~45 µs of URL parsing
def _endpoint_allowed(url: str, allowlist: tuple[str, ...]) -> bool:
    target = _split(url)
    if target is None or not target.hostname or target.username is not None or target.password is not None:
        return False
    for entry in allowlist:
        allowed = _split(entry)
        if allowed is None or (allowed.scheme.lower(), allowed.hostname) != (target.scheme.lower(), target.hostname):
            continue
        if allowed.port is not None and allowed.port != target.port:
            continue
        prefix = allowed.path.rstrip("/")
        if not prefix or target.path == prefix or target.path.startswith(prefix + "/"):
            return True
    return False


def plaintext_auth_refusal(host: str) -> str:
    return (
        f"AUTH over an unencrypted connection refused: {host} is neither loopback nor in SMTP_PLAINTEXT_AUTH_HOSTS; "
        "use STARTTLS or TLS"
    )


def account_destination_errors(account: Model) -> dict[str, str]:
    """The rules above as errors by field, for saving a sender account (its model's `clean`)."""
    errors = {}
    logs_in = account.smtp_username and account.smtp_password
    if (
        account.transport == account.Transport.SMTP
        and logs_in
        and account.security == account.Security.NONE
        and account.smtp_host
        and not smtp_plaintext_auth_allowed(account.smtp_host)
    ):
        errors["security"] = plaintext_auth_refusal(account.smtp_host) + ", or remove the username and password."
    if account.esp_endpoint_url and not esp_endpoint_allowed(account.esp_endpoint_url):
        errors["esp_endpoint_url"] = (
            "Not an allowed ESP endpoint (ESP_ENDPOINT_ALLOWLIST); leave it empty for the ESP's own API."
        )
    return errors
