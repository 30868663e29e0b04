"""Where an account's secrets may go: the one module that decides, for saving an account and for sending.

A secret is bound to its destination (`SECRET_DESTINATIONS`): the fields that say where, and as whom, it is
presented. An edit that changes one of them without entering the secret again clears it
(`account_secrets_bind`), so whoever may edit an account cannot point it at their own server and have the
stored password or API key sent there. Entering the secret again with the new destination keeps it. The admin
form and the API serializer both go through `account_secrets_bind`; the campaign YAML import only references
accounts and cannot change them.

Two rules hold wherever a secret could leave, checked when an account is saved (`SenderAccount.clean`, with
`campaigns.validators`) and again before anything is sent (`smtp_login_refusal`, `esp_refusal`), since rows
stored before the rules, or written around the forms, must not leak either:

- AUTH only over an encrypted connection (TLS, or STARTTLS: smtplib refuses to go on when the server does not
  offer it), except to loopback or to a host in `SMTP_PLAINTEXT_AUTH_HOSTS`. Host names are taken as written,
  never resolved: only `localhost`, 127.0.0.0/8 and ::1 count as loopback.
- An ESP endpoint override (`esp_endpoint_url`) only from `ESP_ENDPOINT_ALLOWLIST`.
"""

from collections.abc import Mapping
from typing import Any

from campaigns.models import SenderAccount
from campaigns.validators import (
    esp_endpoint_allowed,
    host_normalized,
    plaintext_auth_refusal,
    smtp_plaintext_auth_allowed,
)

# secret → the fields that decide where it is sent, or as whom. ESP key id: Amazon SES signs with the pair (a
# new key id comes with its own secret); region: it picks the endpoint host the request goes to.
SECRET_DESTINATIONS: dict[str, tuple[str, ...]] = {
    "smtp_password": ("transport", "smtp_host", "smtp_port", "security", "smtp_username"),
    "esp_secret": ("transport", "esp_name", "esp_endpoint_url", "esp_key_id", "esp_region"),
}
SECRET_LABELS = {"smtp_password": "SMTP password", "esp_secret": "ESP secret"}
# What an account whose secret was cleared says when it is tested or sends (the admin and API say "no password
# stored" as has_password false).
NOT_STORED = {
    "smtp_password": "no password stored (it is cleared when the account's server or username changes): enter it again",
    "esp_secret": "no ESP secret stored (it is cleared when the account's ESP or endpoint changes): enter it again",
}


# --- binding secrets to their destination ---------------------------------------------------------------------


def _same(field: str, old: Any, new: Any) -> bool:
    if field == "smtp_host":
        return host_normalized(str(old or "")) == host_normalized(str(new or ""))
    return old == new


def account_secrets_bind(
    *, account: SenderAccount, changes: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """`changes` (field → new value) to a stored account, with every stored secret that they would send to a
    new destination, and that they do not enter again (a secret present in `changes` is entered), set to "";
    and, per secret cleared, the destination fields that changed. A new account (no pk) keeps what it is given.
    """
    if account.pk is None:
        return dict(changes), {}
    bound, cleared = dict(changes), {}
    for secret, destination in SECRET_DESTINATIONS.items():
        if secret in changes or not getattr(account, secret):
            continue
        moved = [name for name in destination if name in changes and not _same(name, getattr(account, name),
                                                                               changes[name])]  # fmt: skip
        if moved:
            bound[secret] = ""
            cleared[secret] = moved
    return bound, cleared


def account_secrets_cleared_message(cleared: Mapping[str, list[str]]) -> str:
    """What an operator is told when an edit cleared secrets, e.g. in the admin."""
    parts = [f"{SECRET_LABELS[secret]} cleared because {', '.join(fields)} changed" for secret, fields in
             cleared.items()]  # fmt: skip
    return "; ".join(parts) + ". A secret is only sent where it was entered for: enter it again to use it there."


# --- the rules -------------------------------------------------------------------------------------------------


def smtp_login_refusal(account: SenderAccount) -> str | None:
    """Why the account must not log in (checked before connecting, once per connection), or None. An account
    without a username does not log in at all."""
    if not account.smtp_username:
        return None
    if not account.smtp_password:
        return NOT_STORED["smtp_password"]
    if account.security == SenderAccount.Security.NONE and not smtp_plaintext_auth_allowed(account.smtp_host):
        return plaintext_auth_refusal(account.smtp_host)
    return None


def esp_refusal(account: SenderAccount) -> str | None:
    """Why nothing may be sent to the account's ESP (checked before its client is made), or None. Amazon SES
    without a key id uses boto3's credential chain and needs no stored secret."""
    if account.esp_endpoint_url and not esp_endpoint_allowed(account.esp_endpoint_url):
        return f"ESP endpoint {account.esp_endpoint_url} refused: not in ESP_ENDPOINT_ALLOWLIST"
    needs_secret = account.esp_name != SenderAccount.Esp.AMAZON_SES or account.esp_key_id
    if needs_secret and not account.esp_secret:
        return NOT_STORED["esp_secret"]
    return None
