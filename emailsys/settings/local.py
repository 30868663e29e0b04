"""Development: DEBUG on by default, everything on this machine's loopback."""

import os

os.environ.setdefault("DEBUG", "true")
# A local ESP stand-in (moto server from docker compose or `make demo`) may be an account's endpoint.
os.environ.setdefault("ESP_ENDPOINT_ALLOWLIST", "http://127.0.0.1,http://localhost")
os.environ.setdefault("INBOUND_SIMULATOR_ENABLED", "true")

from .base import *  # noqa: E402,F403
