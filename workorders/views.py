"""The unsubscribe page of event mailings (GET shows a button, POST unsubscribes, one-click included)."""

import uuid

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from workorders.services.unsubscribes import contact_by_unsubscribe_token, contact_unsubscribe


@csrf_exempt  # RFC 8058: mailbox providers POST "List-Unsubscribe=One-Click" without any token of ours
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: uuid.UUID) -> HttpResponse:
    contact = contact_by_unsubscribe_token(token=token)
    if contact is None:
        raise Http404("This unsubscribe link is not valid.")
    if request.method == "POST":
        contact_unsubscribe(contact=contact)
        return render(request, "campaigns/unsubscribed.html", {"email": contact.email})
    return render(request, "campaigns/unsubscribe.html", {"email": contact.email})
