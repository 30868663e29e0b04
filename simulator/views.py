"""The simulator's HTTP API (processing/providers.py documents it): thin views over simulator.services. A dev
tool: no auth, CSRF-exempt, JSON in and out, bad input → 400 `{"detail"}`, never a 500."""

import base64
import json
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from simulator import services
from simulator.services import SimulatorInputError, SimulatorNotFound


class BodyTooLarge(Exception):
    pass


def _json_body(request: HttpRequest) -> object:
    try:
        body = request.body
    except RequestDataTooBig:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raise BodyTooLarge(f"the body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE ({limit} bytes)") from None
    if not body:
        raise SimulatorInputError("the body must be JSON (it is empty)")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise SimulatorInputError(f"the body is not valid JSON: {error}") from None
    except RecursionError:
        raise SimulatorInputError("the body is not valid JSON: nested too deeply") from None


def simulator_api(methods: tuple[str, ...]) -> Callable:
    """Method check, JSON errors for the services' exceptions, CSRF exemption, no caching."""

    def decorate(view: Callable) -> Callable:
        @csrf_exempt
        @never_cache
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> JsonResponse:
            if request.method not in methods:
                allowed = ", ".join(methods)
                answer = JsonResponse({"detail": f"method {request.method} not allowed; use {allowed}"}, status=405)
                answer["Allow"] = ", ".join(methods)
                return answer
            try:
                return view(request, *args, **kwargs)
            except SimulatorInputError as error:
                return JsonResponse({"detail": str(error)}, status=400)
            except SimulatorNotFound as error:
                return JsonResponse({"detail": str(error)}, status=404)
            except BodyTooLarge as error:
                return JsonResponse({"detail": str(error)}, status=413)

        return wrapped

    return decorate


def _base_url(request: HttpRequest) -> str:
    return request.build_absolute_uri("/simulator").rstrip("/")


@simulator_api(("POST",))
def send_email(request: HttpRequest) -> JsonResponse:
    delivered = services.email_send(payload=_json_body(request), base_url=_base_url(request))
    first = delivered[0]
    answer = {"email_id": first.email_id, "history_id": first.history_id}
    if len(delivered) > 1:
        answer["emails"] = [
            {"mailbox": item.mailbox, "email_id": item.email_id, "history_id": item.history_id} for item in delivered
        ]
    return JsonResponse(answer, status=201)


@simulator_api(("GET",))
def profile(request: HttpRequest, address: str) -> JsonResponse:
    return JsonResponse(services.mailbox_profile(address=address))


@simulator_api(("GET",))
def history(request: HttpRequest, address: str) -> JsonResponse:
    return JsonResponse(
        services.history_list(
            address=address,
            start=request.GET.get("start_history_id"),
            max_results=request.GET.get("max_results"),
            page_token=request.GET.get("page_token"),
        )
    )


@simulator_api(("GET",))
def messages(request: HttpRequest, address: str) -> JsonResponse:
    return JsonResponse(services.messages_list(address=address, max_results=request.GET.get("max_results")))


def _message_json(found) -> dict:
    raw = bytes(found.raw)
    return {
        "id": found.email_id,
        "history_id": found.history_id,
        "internal_date": found.internal_date.isoformat(),
        "raw": base64.urlsafe_b64encode(raw).decode(),
        "size_estimate": len(raw),
    }


@simulator_api(("GET", "DELETE"))
def message(request: HttpRequest, address: str, email_id: str) -> JsonResponse:
    if request.method == "DELETE":
        services.message_delete(address=address, email_id=email_id)
        return JsonResponse({"deleted": email_id})
    return JsonResponse(_message_json(services.message_get(address=address, email_id=email_id)))


@simulator_api(("POST",))
def batch_get(request: HttpRequest, address: str) -> JsonResponse:
    found, missing = services.messages_batch_get(address=address, payload=_json_body(request))
    return JsonResponse({"messages": [_message_json(message) for message in found], "missing": missing})


@simulator_api(("PUT", "POST", "DELETE"))
def watch(request: HttpRequest, address: str) -> JsonResponse:
    if request.method == "DELETE":
        services.watch_stop(address=address)
        return JsonResponse({"stopped": address})
    url, secret = services.watch_validate(_json_body(request))
    mailbox = services.watch_set(address=address, url=url, secret=secret)
    expiration = mailbox.watch_expiration
    expiration_ms = int(expiration.timestamp() * 1000) if expiration else None
    return JsonResponse({"history_id": mailbox.last_history_id, "expiration": expiration_ms})


@simulator_api(("POST",))
def expire_history(request: HttpRequest, address: str) -> JsonResponse:
    return JsonResponse(services.history_expire(address=address, payload=_json_body(request)))


@simulator_api(("GET", "PUT", "DELETE"))
def faults(request: HttpRequest) -> JsonResponse:
    if request.method == "PUT":
        return JsonResponse(services.faults_set(payload=_json_body(request)))
    if request.method == "DELETE":
        return JsonResponse(services.faults_reset())
    return JsonResponse(services.faults_snapshot())
