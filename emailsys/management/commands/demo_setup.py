"""Prepares this machine for `make demo`: services answer, database exists and is migrated, static files
are collected, the admin user exists with the printed credentials, and demo data is loaded.

Safe to run again: every step is idempotent.
"""

import os

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from emailsys.services import admin_ensure, database_ensure_exists, services_unreachable
from processing.demo import demo_inbound_load

START_HINTS = """\
Start them on this machine:
  PostgreSQL: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start
  Redis:      redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  RabbitMQ:   rabbitmq-server -detached   (only when CELERY_BROKER_URL is amqp://)
or run them in containers: docker compose up -d postgres redis"""


class Command(BaseCommand):
    help = __doc__
    requires_system_checks = []

    def handle(self, *args, **options) -> None:
        problems = services_unreachable()
        if problems:
            lines = [f"  {p.name} is not answering at {p.address} ({p.detail})" for p in problems]
            raise CommandError("\n".join(["Required services are not reachable:", *lines, START_HINTS]))
        if database_ensure_exists(database=settings.DATABASES["default"]):
            self.stdout.write("Created the database.")
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Database migrated.")
        call_command("collectstatic", interactive=False, verbosity=0)
        username = os.environ.get("DEMO_ADMIN_USERNAME", "admin")
        password = os.environ.get("DEMO_ADMIN_PASSWORD", "emailsys-demo")
        admin_ensure(username=username, password=password, email=os.environ.get("DEMO_ADMIN_EMAIL", "admin@localhost"))
        call_command("load_demo_data", stdout=self.stdout)
        demo_inbound_load(stdout=self.stdout)
        self.stdout.write(
            self.style.SUCCESS(
                "\nemailsys demo is ready:\n"
                "  Admin      http://127.0.0.1:8000/admin/   "
                f"user {username!r} password {password!r}\n"
                "  Flower     http://127.0.0.1:5555/         "
                f"basic auth {os.environ.get('FLOWER_BASIC_AUTH', 'admin:emailsys-demo')!r}\n"
                "  Mail       http://127.0.0.1:8000/captured/  (SMTP capture on 127.0.0.1:1025)\n"
                "  Health     http://127.0.0.1:8000/healthz  Metrics http://127.0.0.1:8000/metrics\n"
                "  API docs   http://127.0.0.1:8000/api/docs/\n"
            )
        )
