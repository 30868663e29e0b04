"""Public pages reached from emails: the unsubscribe link (GET shows a button, POST unsubscribes)."""

import uuid

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from campaigns.services.unsubscribes import recipient_by_unsubscribe_token, recipient_unsubscribe


@csrf_exempt  # RFC 8058: mailbox providers POST "List-Unsubscribe=One-Click" without any token of ours
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: uuid.UUID) -> HttpResponse:
    recipient = recipient_by_unsubscribe_token(token=token)
    if recipient is None:
        raise Http404("This unsubscribe link is not valid.")
    if request.method == "POST":
        one_click = request.POST.get("List-Unsubscribe") == "One-Click"
        recipient_unsubscribe(recipient=recipient, source="one-click" if one_click else "link")
        return render(request, "campaigns/unsubscribed.html", {"email": recipient.email})
    return render(request, "campaigns/unsubscribe.html", {"email": recipient.email})
