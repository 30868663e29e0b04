"""Production: HTTPS behind a proxy, secure cookies, HSTS. Every knob still comes from the environment."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import DEBUG, INBOUND_SIMULATOR_ENABLED, env

# DEBUG's technical pages show settings, paths and code to anyone who reaches an error: refused rather than quietly
# switched off, so whoever set DEBUG=true learns that it has no effect here.
if DEBUG:
    raise ImproperlyConfigured("DEBUG must be off with production settings (emailsys.settings.production).")
# The provider simulator takes mail from anyone, unauthenticated: a development and test tool only.
if INBOUND_SIMULATOR_ENABLED:
    raise ImproperlyConfigured("INBOUND_SIMULATOR_ENABLED must be off with production settings.")

# https://docs.djangoproject.com/en/5.2/ref/settings/#secure-proxy-ssl-header
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# Probes and scrapers talk plain HTTP inside the cluster.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
# https://docs.djangoproject.com/en/5.2/ref/middleware/#http-strict-transport-security
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
