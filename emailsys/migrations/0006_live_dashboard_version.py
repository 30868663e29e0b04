from django.db import migrations

from emailsys.live import DASHBOARD_VERSION_SEQUENCE


class Migration(migrations.Migration):
    """The dashboard has no row to carry its live version: a sequence does (emailsys.live)."""

    dependencies = [("emailsys", "0005_api_tokens_hashed")]

    operations = [
        migrations.RunSQL(
            f"CREATE SEQUENCE IF NOT EXISTS {DASHBOARD_VERSION_SEQUENCE}",
            f"DROP SEQUENCE IF EXISTS {DASHBOARD_VERSION_SEQUENCE}",
        )
    ]
