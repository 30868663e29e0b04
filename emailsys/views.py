import secrets

from csp.constants import UNSAFE_INLINE
from csp.decorators import csp_update
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import permission_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views import defaults
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_prometheus.exports import ExportToDjangoView
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerSplitView

from emailsys.health import system_health_check
from emailsys.mail_capture import captured_mail_get, captured_mail_list


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when every component is healthy, 503 otherwise; the body names each component."""
    health = system_health_check()
    return JsonResponse(health.as_dict(), status=200 if health.healthy else 503)


# The API docs under the Content-Security-Policy: Swagger UI with its start script served as a file (the split
# view), Redoc with the styles it generates at run time and its search worker (a blob: URL) allowed on its page only.
api_docs = SpectacularSwaggerSplitView.as_view(url_name="api-schema")
api_redoc = csp_update({"style-src": [UNSAFE_INLINE], "worker-src": ["blob:"]})(
    SpectacularRedocView.as_view(url_name="api-schema")
)


@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics; with METRICS_BEARER_TOKEN set, only for `Authorization: Bearer <token>` (compared in
    constant time, so response times tell nothing about the token)."""
    expected = settings.METRICS_BEARER_TOKEN
    if expected:
        scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(offered.strip().encode(), expected.encode()):
            response = HttpResponse("A bearer token is required (METRICS_BEARER_TOKEN).\n", status=401)
            response["Content-Type"] = "text/plain; charset=utf-8"
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return ExportToDjangoView(request)


# Captured mail is what the campaigns sent, as their send records hold it: the same permission shows it.
CAPTURED_MAIL_PERMISSION = "campaigns.view_sendrecord"


@staff_member_required
@permission_required(CAPTURED_MAIL_PERMISSION, raise_exception=True)
def captured_mail_index(request: HttpRequest) -> HttpResponse:
    # Not `messages`: the admin's base template shows that context variable as the messages framework's notices.
    captured = captured_mail_list(directory=settings.MAIL_CAPTURE_DIR)
    context = {**admin.site.each_context(request), "captured": captured, "directory": settings.MAIL_CAPTURE_DIR}
    return render(request, "captured_mail/list.html", context)


@staff_member_required
@permission_required(CAPTURED_MAIL_PERMISSION, raise_exception=True)
def captured_mail_detail(request: HttpRequest, name: str) -> HttpResponse:
    found = captured_mail_get(directory=settings.MAIL_CAPTURE_DIR, name=name)
    if found is None:
        raise Http404("No such captured message.")
    message, raw = found
    if request.GET.get("raw"):
        response = HttpResponse(raw, content_type="message/rfc822")
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    context = {
        **admin.site.each_context(request),  # the admin's header and links, as on every admin page
        "name": name,
        "headers": list(message.items()),
        "text": text.get_content() if text else "",
        "html": html.get_content() if html else "",
    }
    return render(request, "captured_mail/detail.html", context)


# The HTML part is shown in a sandboxed iframe (no scripts, no forms); `srcdoc` inherits this page's policy, so the
# page allows inline styles for the email's own <style> and style attributes. Scripts stay blocked.
captured_mail_detail = csp_update({"style-src": [UNSAFE_INLINE]})(captured_mail_detail)


# --- errors Django answers itself (the URLconf's handler400/403/404/500) ------------------------------------
# Under /api/ they are JSON like DRF's own errors, so a client never parses an HTML page; elsewhere Django's.
# https://docs.djangoproject.com/en/5.2/topics/http/views/#customizing-error-views


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """A SuspiciousOperation outside DRF's views (too many fields, a disallowed host's request, ...)."""
    if _is_api(request):
        return JsonResponse({"detail": "Bad request."}, status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": "You do not have permission to perform this action."}, status=403)
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": f"No API endpoint at {request.path}; see /api/schema/."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """No traceback, whatever DEBUG says elsewhere: the error is logged with it (django.request)."""
    if _is_api(request):
        return JsonResponse({"detail": "Server error; it has been logged."}, status=500)
    return defaults.server_error(request)
