"""Tests: real PostgreSQL, Redis and RabbitMQ; each pytest-xdist worker gets its own Redis database."""

import os

_xdist_index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
os.environ.setdefault("REDIS_URL", f"redis://127.0.0.1:6379/{8 + _xdist_index % 8}")
os.environ.setdefault("SECRET_KEY", "test-secret-key-only-for-the-test-suite-0123456789-abcdefghijklmnop")
os.environ.setdefault("ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")

from .base import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
