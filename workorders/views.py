"""Work orders' pages outside the model admin:

- the unsubscribe pages of event mailings (GET shows a button, POST unsubscribes, one-click included), in the
  contact's language; a Test step's emails link to a page that unsubscribes no one;
- the artifacts (dry-run list, prepared emails) for the admin, from whichever storage is configured.
"""

import uuid

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from workorders.models import WorkOrder
from workorders.selectors import ArtifactContent, workorder_artifact_content
from workorders.services.unsubscribes import contact_by_unsubscribe_token, contact_unsubscribe, unsubscribe_texts


@csrf_exempt  # RFC 8058: mailbox providers POST "List-Unsubscribe=One-Click" without any token of ours
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: uuid.UUID) -> HttpResponse:
    contact = contact_by_unsubscribe_token(token=token)
    if contact is None:
        raise Http404("This unsubscribe link is not valid.")
    texts = unsubscribe_texts(language=contact.language, email=contact.email)
    if request.method == "POST":
        contact_unsubscribe(contact=contact)
        return render(request, "workorders/unsubscribed.html", {"texts": texts})
    return render(request, "workorders/unsubscribe.html", {"texts": texts})


@csrf_exempt  # one-click POSTs reach it too
@require_http_methods(["GET", "POST"])
def unsubscribe_test(request: HttpRequest, language: str) -> HttpResponse:
    return render(request, "workorders/unsubscribe_test.html", {"texts": unsubscribe_texts(language=language)})


@staff_member_required  # no session: the admin's login page, then back here
@require_GET
def workorder_artifact(request: HttpRequest, work_order_id: int, name: str) -> HttpResponse:
    """An artifact inline (as text, so the browser shows the CSV or the message) or, with `?download=1`, as an
    attachment of its own type. Staff is not enough: the list names every recipient, so view permission on work
    orders is checked; an unknown work order or name is a 404 (names are looked up, never used as paths)."""
    if not request.user.has_perm("workorders.view_workorder"):
        raise PermissionDenied("Viewing a work order's files needs the permission to view work orders.")
    if not WorkOrder.objects.filter(id=work_order_id).exists():
        raise Http404("No such work order.")
    found = workorder_artifact_content(work_order_id=work_order_id, name=name)
    if found is None:
        raise Http404("This work order has no such file (yet).")
    return artifact_response(found, download=request.GET.get("download") == "1")


def artifact_response(found: ArtifactContent, *, download: bool) -> HttpResponse:
    """The admin's and the API's response for an artifact: inline as UTF-8 text, or an attachment."""
    content_type = found.artifact.content_type if download else "text/plain; charset=utf-8"
    response = HttpResponse(found.content, content_type=content_type)
    disposition = "attachment" if download else "inline"
    response["Content-Disposition"] = f'{disposition}; filename="{found.artifact.name}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response
