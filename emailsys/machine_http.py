"""Machine-to-machine HTTP (a provider's POST /webhook, the simulator's API under /simulator/) through Django
without the browser middleware.

Under ASGI every sync middleware of settings.MIDDLEWARE (sessions, CSRF, auth, messages, CSP, axes, WhiteNoise,
the request metrics) runs its hooks through a thread hop of its own: ~4 ms of CPU per request, two thirds of what a
webhook cost. These endpoints use none of them — they are authenticated by their signature (or are a dev tool),
answer JSON and are CSRF-exempt — so they get Django's handler with an empty middleware chain: the same URLconf,
views, exception handling and request signals (database connections go back to the pool), one thread hop.
Their requests are counted by the endpoints' own metrics (inbound_webhooks_total), not by django_prometheus.
"""

from asgiref.sync import sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpResponseBase
from django.urls import set_script_prefix

MACHINE_PATHS = ("/webhook",)
MACHINE_PREFIXES = ("/simulator/",)


def machine_path(path: str) -> bool:
    return path in MACHINE_PATHS or path.startswith(MACHINE_PREFIXES)


class MachineASGIHandler(ASGIHandler):
    """Django's ASGI handler with no middleware, the request handled in one thread hop: the request signals, the
    view and closing the response (request_finished: the database connection back to the pool) run in the sync
    thread together, where Django's own handler hops once for each (under load each hop is a context switch)."""

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._middleware_chain = convert_exception_to_response(self._get_response)  # BaseHandler's, sync

    async def __call__(self, scope, receive, send) -> None:
        # Django's handler opens a ThreadSensitiveContext per request, which starts a thread of its own for it (and
        # joins it after): a thread created per webhook. One call runs the whole request here, so it can take any
        # thread of the loop's executor (threads are reused; each keeps its database connection from the pool).
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        response = await sync_to_async(self._respond, thread_sensitive=False)(scope, body_file)
        await self.send_response(response, send)

    def _respond(self, scope, body_file) -> HttpResponseBase:
        response = None
        try:
            signals.request_started.send(sender=self.__class__, scope=scope)
            request, response = self.create_request(scope, body_file)
            if request is not None:
                response = self.get_response(request)  # exceptions become responses here, as in Django's handler
            return response
        finally:
            body_file.close()
            if response is None:
                signals.request_finished.send(sender=self.__class__)
            else:
                response.close()  # request_finished (the content stays for send_response)


class MachinePathRouter:
    """HTTP for machine paths to `machine`, everything else to `browser` (Django with all its middleware)."""

    def __init__(self, *, browser, machine) -> None:
        self.browser, self.machine = browser, machine

    async def __call__(self, scope, receive, send) -> None:
        app = self.machine if scope["type"] == "http" and machine_path(scope.get("path", "")) else self.browser
        await app(scope, receive, send)
