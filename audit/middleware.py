"""Sets the audit context of admin and API requests (`audit.context`). Other paths (unsubscribe pages, public
work-order pages, health, metrics) are not operator entry points and record nothing."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from audit.context import AuditSource, audit_context

_SOURCES = (("/admin/", AuditSource.ADMIN), ("/api/", AuditSource.API))


class AuditContextMiddleware:
    """After AuthenticationMiddleware. The user is read when an entry is recorded, so DRF's token
    authentication (inside the view) is seen too."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        for prefix, source in _SOURCES:
            if request.path_info.startswith(prefix):
                with audit_context(source=source, request=request):
                    return self.get_response(request)
        return self.get_response(request)
