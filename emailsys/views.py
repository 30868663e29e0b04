from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from emailsys.health import system_health_check
from emailsys.mail_capture import captured_mail_get, captured_mail_list


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when every component is healthy, 503 otherwise; the body names each component."""
    health = system_health_check()
    return JsonResponse(health.as_dict(), status=200 if health.healthy else 503)


@staff_member_required
def captured_mail_index(request: HttpRequest) -> HttpResponse:
    messages = captured_mail_list(directory=settings.MAIL_CAPTURE_DIR)
    return render(request, "captured_mail/list.html", {"messages": messages, "directory": settings.MAIL_CAPTURE_DIR})


@staff_member_required
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
        "name": name,
        "headers": list(message.items()),
        "text": text.get_content() if text else "",
        "html": html.get_content() if html else "",
    }
    return render(request, "captured_mail/detail.html", context)
