"""Machine-to-machine HTTP (a provider's POST /webhook, the simulator's API under /simulator/) through Django
without the browser middleware.

Under ASGI every sync middleware of settings.MIDDLEWARE (sessions, CSRF, auth, messages, CSP, axes, WhiteNoise,
the request metrics) runs its hooks through a thread hop of its own: ~4 ms of CPU per request, two thirds of what a
webhook cost. These endpoints use none of them — they are authenticated by their signature (or are a dev tool),
answer JSON and are CSRF-exempt — so they get Django's handler with an empty middleware chain: the same URLconf,
views, exception handling and request signals (database connections go back to the pool), one thread hop.
Their requests are counted by the endpoints' own metrics (inbound_webhooks_total), not by django_prometheus.
"""

from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response

MACHINE_PATHS = ("/webhook",)
MACHINE_PREFIXES = ("/simulator/",)


def machine_path(path: str) -> bool:
    return path in MACHINE_PATHS or path.startswith(MACHINE_PREFIXES)


class MachineASGIHandler(ASGIHandler):
    """Django's ASGI handler with no middleware (BaseHandler.load_middleware with an empty MIDDLEWARE)."""

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        get_response = self._get_response_async if is_async else self._get_response
        self._middleware_chain = convert_exception_to_response(get_response)


class MachinePathRouter:
    """HTTP for machine paths to `machine`, everything else to `browser` (Django with all its middleware)."""

    def __init__(self, *, browser, machine) -> None:
        self.browser, self.machine = browser, machine

    async def __call__(self, scope, receive, send) -> None:
        app = self.machine if scope["type"] == "http" and machine_path(scope.get("path", "")) else self.browser
        await app(scope, receive, send)
