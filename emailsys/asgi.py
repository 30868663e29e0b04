"""ASGI entry point: HTTP through Django, WebSockets through Channels (authenticated, origin-checked).

Served by daphne: `daphne -b 0.0.0.0 -p 8000 emailsys.asgi:application`.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emailsys.settings.local")
# Under ASGI every request runs its sync code in a thread of its own, and Django's persistent connections belong
# to a thread: with DB_CONN_MAX_AGE > 0 each request would leave its connection open until PostgreSQL ran out
# ("too many clients" after a burst of webhooks), and with 0 each request connected anew (a third of a webhook's
# time). Web processes take connections from a pool of their own (psycopg's, DB_POOL_MAX_SIZE) unless told
# otherwise; DB_POOL_MAX_SIZE=0 closes them after each request instead. Set only while the settings load: a
# process that imports this module (a test) must not hand the pool to the Celery workers it starts later (a prefork
# child finds the pool its parent closed).
WEB_DATABASE_DEFAULTS = {"DB_POOL_MAX_SIZE": "8", "DB_CONN_MAX_AGE": "0"}
_web_defaults = {name: value for name, value in WEB_DATABASE_DEFAULTS.items() if name not in os.environ}
os.environ.update(_web_defaults)
try:
    django_asgi_app = get_asgi_application()  # before importing consumers: it sets up Django
finally:
    for _name in _web_defaults:
        del os.environ[_name]

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from emailsys.machine_http import MachineASGIHandler, MachinePathRouter  # noqa: E402
from emailsys.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": MachinePathRouter(browser=django_asgi_app, machine=MachineASGIHandler()),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
