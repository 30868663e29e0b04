"""Loads demo data: every installed app with a `demo` module contributes through its `demo_load()`.

Idempotent: running it twice leaves the same data.
"""

from importlib import import_module
from importlib.util import find_spec

from django.apps import apps
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args, **options) -> None:
        for app_config in apps.get_app_configs():
            module_name = f"{app_config.name}.demo"
            if find_spec(module_name) is None:
                continue
            summary = import_module(module_name).demo_load()
            self.stdout.write(f"demo data: {app_config.label}: {summary}")
