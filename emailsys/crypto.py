"""Secrets at rest: Fernet with a list of keys (newest first) so keys can be rotated without downtime."""

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import models
from django.dispatch import receiver


@cache
def _fernet() -> MultiFernet:
    keys = list(settings.FIELD_ENCRYPTION_KEYS)
    if not keys and settings.DEBUG:  # local development only: a key derived from the dev SECRET_KEY
        keys = [base64.urlsafe_b64encode(hashlib.sha256(settings.SECRET_KEY.encode()).digest()).decode()]
    if not keys:
        raise ImproperlyConfigured("Set FIELD_ENCRYPTION_KEYS (manage.py generate_encryption_key makes one).")
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError as error:
        raise ImproperlyConfigured(f"FIELD_ENCRYPTION_KEYS holds an invalid Fernet key: {error}") from None


@receiver(setting_changed)
def _keys_changed(*, setting: str, **kwargs) -> None:
    """`override_settings` (tests) changes the keys at run time; the process never does otherwise."""
    if setting in ("FIELD_ENCRYPTION_KEYS", "DEBUG", "SECRET_KEY"):
        _fernet.cache_clear()


def secret_encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def secret_decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        message = "A stored secret cannot be decrypted with any key in FIELD_ENCRYPTION_KEYS."
        raise ImproperlyConfigured(message) from None


def secret_rotate(token: str) -> str:
    """Re-encrypts with the newest key (decrypting with whichever key works)."""
    return _fernet().rotate(token.encode()).decode()


class EncryptedTextField(models.TextField):
    """Stores ciphertext; Python code sees plaintext. Not searchable, never shown back by forms or the API."""

    def from_db_value(self, value, expression, connection):
        return None if value in (None, "") else secret_decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return "" if value in (None, "") else secret_encrypt(value)
