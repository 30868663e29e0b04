"""Rotating FIELD_ENCRYPTION_KEYS re-encrypts every encrypted field, so once the old key is dropped an SMTP account
still has its password and an ESP account its secret, and still sends (Amazon SES = moto server on loopback)."""

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db.models import TextField
from django.db.models.functions import Cast
from django.test import override_settings

from campaigns.models import SenderAccount, SendRecord
from campaigns.services.esp import esp_backends_close
from campaigns.tests.factories import SenderAccountFactory
from campaigns.tests.scenarios import run_until_idle
from campaigns.tests.test_esp import SECRET, moto_received, ses_scenario

pytestmark = pytest.mark.django_db

OLD_KEY, NEW_KEY = Fernet.generate_key().decode(), Fernet.generate_key().decode()
PASSWORD = "Sup3r-Secret-SMTP-pw!"


def stored(account: SenderAccount, field: str) -> str:
    raw = SenderAccount.objects.annotate(raw=Cast(field, output_field=TextField()))
    return raw.values_list("raw", flat=True).get(pk=account.pk)


def test_after_rotation_without_the_old_key_smtp_and_esp_accounts_keep_their_secrets_and_esp_still_sends(
    moto_endpoint,
) -> None:
    with override_settings(FIELD_ENCRYPTION_KEYS=[OLD_KEY]):
        smtp_account = SenderAccountFactory(smtp_password=PASSWORD)
        scenario, esp_account = ses_scenario(moto_endpoint, leads=1)
    assert Fernet(OLD_KEY).decrypt(stored(esp_account, "esp_secret").encode()).decode() == SECRET

    with override_settings(FIELD_ENCRYPTION_KEYS=[NEW_KEY, OLD_KEY]):
        out = StringIO()
        call_command("rotate_encryption_keys", stdout=out)
    lines = out.getvalue().splitlines()
    assert "campaigns.SenderAccount.smtp_password: 1 re-encrypted" in lines
    assert "campaigns.SenderAccount.esp_secret: 1 re-encrypted" in lines
    assert PASSWORD not in out.getvalue() and SECRET not in out.getvalue()

    esp_backends_close()  # nothing cached from before: the secret is read and decrypted again
    try:
        with override_settings(FIELD_ENCRYPTION_KEYS=[NEW_KEY]):
            assert SenderAccount.objects.get(pk=smtp_account.pk).smtp_password == PASSWORD
            assert SenderAccount.objects.get(pk=esp_account.pk).esp_secret == SECRET
            assert Fernet(NEW_KEY).decrypt(stored(esp_account, "esp_secret").encode()).decode() == SECRET

            run_until_idle()

        record = SendRecord.objects.get(campaign=scenario.campaign)
        assert record.state == SendRecord.State.SENT, record.last_error
        [received] = moto_received(moto_endpoint, source=esp_account.email)
        assert received["id"] == record.provider_message_id
    finally:
        esp_backends_close()
