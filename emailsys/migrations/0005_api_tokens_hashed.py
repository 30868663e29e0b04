"""DRF's plaintext tokens (`rest_framework.authtoken`, no longer installed) become knox tokens stored as digests.

Each keeps working with the same header, `Authorization: Token <its 40 characters>`: knox finds a token by its
first 15 characters (`token_key`) and compares the SHA-512 digest of the whole value, whatever its length. They
keep no expiry, as before. Then the plaintext table is dropped, and authtoken's migration records with it: should
the app ever be installed again (an older release deployed), `migrate` recreates its table instead of failing on
a missing one. The table is read with SQL because the app is not installed: on a database made after its removal
there is no table and nothing to do. Not reversible: a digest cannot be turned back into a token.
"""

from django.conf import settings
from django.db import migrations
from knox.crypto import hash_token
from knox.settings import CONSTANTS

LEGACY_TABLE = "authtoken_token"


def drf_tokens_hash(apps, schema_editor) -> None:
    connection = schema_editor.connection
    if LEGACY_TABLE not in connection.introspection.table_names():
        return
    AuthToken = apps.get_model("knox", "AuthToken")
    with connection.cursor() as cursor:
        cursor.execute('SELECT "key", "user_id", "created" FROM "authtoken_token"')
        for key, user_id, created in cursor.fetchall():
            digest = hash_token(key)
            AuthToken(digest=digest, token_key=key[: CONSTANTS.TOKEN_KEY_LENGTH], user_id=user_id).save(
                force_insert=True
            )
            AuthToken.objects.filter(digest=digest).update(created=created)  # auto_now_add set it to now
    schema_editor.execute('DROP TABLE "authtoken_token" CASCADE')
    schema_editor.execute("DELETE FROM django_migrations WHERE app = 'authtoken'")


class Migration(migrations.Migration):
    dependencies = [
        ("emailsys", "0004_received_event_finished_index"),
        ("knox", "0009_extend_authtoken_field"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [migrations.RunPython(drf_tokens_hash, migrations.RunPython.noop)]
