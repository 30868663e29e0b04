"""POST /webhook: the provider's signed notifications (Standard Webhooks). OWNED BY the webhook helper."""

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST


@csrf_exempt
@require_POST
def webhook_receive(request):
    return JsonResponse({"detail": "not yet"}, status=503)
