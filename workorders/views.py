"""The unsubscribe pages of event mailings (GET shows a button, POST unsubscribes, one-click included), in the
contact's language; a Test step's emails link to a page that unsubscribes no one."""

import uuid

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

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
