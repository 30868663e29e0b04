"""Where an IMAP password may go, as rules on hosts, without the services, so that `ImapAccount.clean` can apply
them (services/imap.py applies them again before every connection)."""

from django.conf import settings
from django.db.models import Model

from campaigns.validators import plaintext_auth_allowed

NO_TLS = "none"  # ImapAccount.Security.NONE (the model imports this module, not the other way round)


def imap_plaintext_auth_allowed(host: str) -> bool:
    """Loopback or a host of IMAP_PLAINTEXT_AUTH_HOSTS, as for SMTP (campaigns.validators)."""
    return plaintext_auth_allowed(host, tuple(settings.IMAP_PLAINTEXT_AUTH_HOSTS))


def imap_plaintext_refusal(host: str) -> str:
    return (
        f"IMAP login over an unencrypted connection refused: {host} is neither loopback nor in "
        "IMAP_PLAINTEXT_AUTH_HOSTS; use TLS or STARTTLS"
    )


def imap_settings_errors(account: Model) -> dict[str, str]:
    """The rules as errors by field, for saving (the model's `clean`, the admin form)."""
    if account.security == NO_TLS and account.host and not imap_plaintext_auth_allowed(account.host):
        return {"security": imap_plaintext_refusal(account.host) + "."}
    return {}
