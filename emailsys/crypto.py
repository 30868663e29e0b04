"""Secrets at rest: Fernet with a list of keys (newest first) so keys can be rotated without downtime."""

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import models
from django.db.models import Model, TextField, Value
from django.db.models.functions import Cast
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


def encrypted_fields_rotate() -> dict[str, int]:
    """Re-encrypts every stored value of every encrypted field (any model's `EncryptedTextField`: SMTP passwords,
    ESP secrets, and whatever is added later) with the newest key in FIELD_ENCRYPTION_KEYS. Returns how many values
    it re-encrypted, by field ("campaigns.SenderAccount.esp_secret").

    Works on the ciphertext (never loads a plaintext into a model) and writes each value with a compare-and-set
    on the old ciphertext, so a secret changed meanwhile is not overwritten. Run it after putting a new key first;
    drop the old key only afterwards. Each value commits on its own, so an interrupted run is simply run again.
    """
    counts: dict[str, int] = {}
    for model in apps.get_models():
        if model._meta.proxy or not model._meta.managed:
            continue  # a proxy's rows are its concrete model's
        for field in model._meta.local_concrete_fields:
            if isinstance(field, EncryptedTextField):
                counts[f"{model._meta.label}.{field.name}"] = _encrypted_field_rotate(model=model, field=field)
    return counts


def _encrypted_field_rotate(*, model: type[Model], field: EncryptedTextField) -> int:
    raw = Cast(field.name, output_field=TextField())  # the ciphertext, as stored
    rows = model._base_manager.annotate(ciphertext=raw).exclude(ciphertext="").exclude(ciphertext__isnull=True)
    rotated = 0
    for pk, ciphertext in rows.values_list("pk", "ciphertext").iterator():
        try:
            new_ciphertext = secret_rotate(ciphertext)
        except InvalidToken:
            raise ImproperlyConfigured(
                f"The {field.verbose_name} of {model._meta.verbose_name} {pk} cannot be decrypted with any key in "
                "FIELD_ENCRYPTION_KEYS; keep the old key in the list until rotation is done."
            ) from None
        rotated += (
            model._base_manager.annotate(ciphertext=raw)
            .filter(pk=pk, ciphertext=ciphertext)
            .update(**{field.name: Value(new_ciphertext, output_field=TextField())})
        )
    return rotated
