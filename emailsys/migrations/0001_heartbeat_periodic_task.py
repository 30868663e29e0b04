"""Once created beat's heartbeat periodic task. Periodic tasks are now declared in emailsys/periodic.py and created
after migrate (emailsys.apps); this migration stays, as a no-op, so the migration graph is unchanged."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("django_celery_beat", "0019_alter_periodictasks_options")]

    operations = [migrations.RunPython(migrations.RunPython.noop, migrations.RunPython.noop)]
