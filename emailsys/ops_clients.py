"""Short-timeout clients for operational reads and writes (health probes, metrics, beat heartbeat).

Their callers must never stall on an outage, so every timeout here is a second or two.
"""

from functools import cache

import redis
from django.conf import settings
from kombu import Connection


@cache
def ops_redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)


def ops_broker_connection() -> Connection:
    from emailsys.celery import app as celery_app

    return celery_app.connection_for_write(
        connect_timeout=2, transport_options={"socket_connect_timeout": 1, "socket_timeout": 2, "max_retries": 0}
    )
