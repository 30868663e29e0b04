"""The base class of management commands that change things: everything they do is recorded with source
"command" and the operating-system user as actor. Read-only commands and long-running processes (the
dispatcher, the SQS bridge) stay plain `BaseCommand`s: what a process does on its own is not an operator's
action (`audit.context`)."""

from django.core.management.base import BaseCommand

from audit.context import AuditSource, audit_context, os_user


class OperatorCommand(BaseCommand):
    def execute(self, *args, **options):
        with audit_context(source=AuditSource.COMMAND, command_user=os_user()):
            return super().execute(*args, **options)
