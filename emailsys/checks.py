"""System checks of a deployment (`manage.py check --deploy`): what must hold before production serves anyone."""

from cryptography.fernet import Fernet
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register

GENERATE_HINT = "Generate one with `manage.py generate_encryption_key` and pass it in the environment."


@register(Tags.security, deploy=True)
def field_encryption_keys_check(app_configs=None, **kwargs) -> list[CheckMessage]:
    """Secrets at rest (emailsys.crypto) need real Fernet keys; without DEBUG a missing key only shows when the first
    secret is saved or read, so a deployment is checked before it serves. Never echoes a key."""
    keys = list(settings.FIELD_ENCRYPTION_KEYS)
    if not keys:
        return [
            Error(
                "FIELD_ENCRYPTION_KEYS is not set: SMTP passwords and ESP secrets cannot be encrypted or read.",
                hint=GENERATE_HINT,
                id="emailsys.E001",
            )
        ]
    errors: list[CheckMessage] = []
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            errors.append(
                Error(
                    f"FIELD_ENCRYPTION_KEYS: key {position} of {len(keys)} is not a valid Fernet key "
                    "(32 bytes, URL-safe base64).",
                    hint=GENERATE_HINT,
                    id="emailsys.E002",
                )
            )
    return errors
