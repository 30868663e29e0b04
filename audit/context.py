"""Who is acting, and from where: one context per request (admin, API) or operator command, set once by the
entry point (`audit.middleware.AuditContextMiddleware`, `audit.commands.OperatorCommand`) and read by
`audit.services.audit_record` where the action happens.

Without a context nothing is recorded: workers, beat and inbound processing change rows on their own (pausing an
account after failures, completing a campaign) and the activity log already says so; the audit trail is for
people. The actor of an HTTP request is read when an entry is recorded, not when the context is set: the admin
authenticates in middleware, DRF only inside the view (token or session) and it sets the user it authenticated
on the Django request too, so a token-authenticated API call is recorded with the token's user.
"""

import contextlib
import getpass
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from django.db import models
from django.http import HttpRequest


class AuditSource(models.TextChoices):
    ADMIN = "admin", "Admin"
    API = "api", "API"
    COMMAND = "command", "Management command"


@dataclass(frozen=True)
class AuditContext:
    source: str
    request: HttpRequest | None = None
    # Who runs a management command: the operating-system user (no Django user is logged in).
    command_user: str = ""

    @property
    def user(self):
        """The authenticated Django user of the request, else None."""
        user = getattr(self.request, "user", None)
        return user if user is not None and user.is_authenticated else None

    @property
    def actor_name(self) -> str:
        user = self.user
        if user is not None:
            return user.get_username() or f"user {user.pk}"
        return self.command_user or ("anonymous" if self.request is not None else "")

    @property
    def remote_addr(self) -> str | None:
        """The peer's address (REMOTE_ADDR). Behind a reverse proxy that is the proxy's: X-Forwarded-For is not
        trusted, anyone can send it."""
        if self.request is None:
            return None
        return self.request.META.get("REMOTE_ADDR") or None


_current: ContextVar[AuditContext | None] = ContextVar("audit_context", default=None)


def audit_context_current() -> AuditContext | None:
    return _current.get()


@contextlib.contextmanager
def audit_context(*, source: str, request: HttpRequest | None = None, command_user: str = "") -> Iterator[AuditContext]:
    """Everything recorded inside is attributed to this request or command; contexts nest (the inner wins)."""
    context = AuditContext(source=source, request=request, command_user=command_user)
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def os_user() -> str:
    """The operating-system user running this process ("root" in the containers)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (some containers)
        return "root"
