"""Settings shared by every environment; everything comes from the environment (12-factor).

local.py, test.py and production.py only override defaults. Every variable read here is listed in the
README's environment table (a test keeps the two in step).
"""

from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

from emailsys.logs import LOG_FORMATS, logging_config

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    env.read_env(str(BASE_DIR / ".env"))

# --- Core -------------------------------------------------------------------------------------------

DEBUG = env.bool("DEBUG", default=False)
# A dev key exists only for DEBUG; without DEBUG a missing SECRET_KEY stops the process at start.
DEV_SECRET_KEY = "django-insecure-dev-only-key-never-use-in-production"  # noqa: S105 - DEBUG only
SECRET_KEY = env("SECRET_KEY", default=DEV_SECRET_KEY if DEBUG else environ.Env.NOTSET)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "django_filters",
    "knox",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "django_prometheus",
    "auditlog",  # django-auditlog: the audit trail's LogEntry model (before "audit", whose admin replaces its own)
    "audit",
    "csp",
    "emailsys",
    "campaigns",
    "workorders",
    "processing",
    "simulator",  # its tables always exist; its URLs only with INBOUND_SIMULATOR_ENABLED
    "archive",  # the SQS → object storage archiver (no models)
    "transfers",  # import jobs (uploads run by a worker) and CSV exports, for the admin and the API
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Who acts from the admin and the API, for the audit trail (audit.context).
    "audit.middleware.AuditContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last, so it sees the flag the authentication backend sets and answers a locked-out login with its page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "emailsys.urls"
ASGI_APPLICATION = "emailsys.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------------

DATABASES = {"default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/emailsys")}
# Persistent connections with a liveness check; set 0 behind pgbouncer in transaction mode.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# https://docs.djangoproject.com/en/5.2/ref/databases/#transaction-pooling-server-side-cursors (pgbouncer)
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = env.bool("DB_DISABLE_SERVER_SIDE_CURSORS", default=False)
DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env.int("DB_CONNECT_TIMEOUT", default=5)
# A connection pool per process (psycopg 3): with it, sending threads hand their connection back while they wait
# on SMTP, so connections stay bounded by the pool, not by threads. 0 = off (persistent connections instead).
# https://docs.djangoproject.com/en/5.2/ref/databases/#connection-pool
DB_POOL_MAX_SIZE = env.int("DB_POOL_MAX_SIZE", default=0)
if DB_POOL_MAX_SIZE:
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # required with a pool
    # A check query on every checkout would double the round trips of a sending thread, which checks a
    # connection out for each statement it runs between SMTP waits; a broken one is discarded when returned.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
    DATABASES["default"]["OPTIONS"]["pool"] = {"min_size": 1, "max_size": DB_POOL_MAX_SIZE, "timeout": 30}
# The statements every email repeats run as server-side prepared statements (emailsys.db.execute_prepared);
# false behind pgbouncer in transaction mode before 1.21, which cannot keep them.
DB_PREPARED_STATEMENTS = env.bool("DB_PREPARED_STATEMENTS", default=True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: cache, channel layer, results, beat heartbeat, task metrics ------------------------------

REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "emailsys",
    }
}
# https://channels.readthedocs.io/en/latest/topics/channel_layers.html
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # redis-py's default socket timeout (5 s) equals channels_redis's blocking read (BZPOPMIN, 5 s): an idle
            # socket's read then times out and its consumer dies (django/channels_redis#422). Reads get longer.
            "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5}],
            "prefix": env("CHANNELS_PREFIX", default="emailsys"),
        },
    }
}
# An open live socket re-checks its user's access this often (seconds; and on every frame the client sends): a
# logged-out session, a user no longer active or staff, or a lost view permission closes it (emailsys/consumers.py).
_live_socket_recheck = env("LIVE_SOCKET_RECHECK_SECONDS", default="60")
try:
    LIVE_SOCKET_RECHECK_SECONDS = float(_live_socket_recheck)
except ValueError:
    LIVE_SOCKET_RECHECK_SECONDS = 0.0  # refused below, with the value given
if not 0 < LIVE_SOCKET_RECHECK_SECONDS <= 60:
    raise ImproperlyConfigured(
        f"LIVE_SOCKET_RECHECK_SECONDS must be seconds above 0 and at most 60, not {_live_socket_recheck!r}"
    )
# Progress (an email sent, a step's count) reaches live pages at most this often per object, across every process
# (emailsys/live.py); each process looks at its pending marks every LIVE_FLUSH_TICK_SECONDS.
LIVE_PROGRESS_SECONDS = env.float("LIVE_PROGRESS_SECONDS", default=0.5)
LIVE_FLUSH_TICK_SECONDS = env.float("LIVE_FLUSH_TICK_SECONDS", default=0.1)

# --- Auth, i18n, static -----------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # https://whitenoise.readthedocs.io/en/stable/django.html#add-compression-and-caching-support
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / "var" / "media")
# Stored files (work orders' prepared emails and dry-run lists) go to S3 through django-storages when a bucket is
# named; AWS credentials come from boto3's usual variables. The endpoint is for S3-compatible stores and moto.
STORAGE_S3_BUCKET = env("STORAGE_S3_BUCKET", default="")
if STORAGE_S3_BUCKET:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": STORAGE_S3_BUCKET,
            "endpoint_url": env("STORAGE_S3_ENDPOINT_URL", default="") or None,
            "region_name": env("STORAGE_S3_REGION", default="") or None,
            "location": env("STORAGE_S3_PREFIX", default=""),
            "file_overwrite": True,
        },
    }

# --- Email ------------------------------------------------------------------------------------------

EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = env("EMAIL_HOST", default="127.0.0.1")
EMAIL_PORT = env.int("EMAIL_PORT", default=1025)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="emailsys@localhost")
# Where `manage.py smtp_capture` (the local capture server) stores what it accepts, one .eml per message, shown at
# /captured/. OUTBOX_DIR is its old name, still read when MAIL_CAPTURE_DIR is unset so existing .env files work.
# A pathlib.Path: the pages list it with .is_dir() and /, which env.path's own Path type does not have.
MAIL_CAPTURE_DIR = Path(
    env.path("MAIL_CAPTURE_DIR", default=env("OUTBOX_DIR", default=str(BASE_DIR / "var" / "captured")))
)

# --- API --------------------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "emailsys.auth.TokenAuthentication",  # knox's, with bad input refused as 401
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Active staff with the operation's model permissions; an @action names its own (emailsys.permissions).
    "DEFAULT_PERMISSION_CLASSES": ["emailsys.permissions.ModelPermissions"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
    # List endpoints filter with their view's django-filter `filterset_class`; details ignore the query string.
    # https://django-filter.readthedocs.io/en/stable/guide/rest_framework.html
    "DEFAULT_FILTER_BACKENDS": ["emailsys.filters.ListFilterBackend"],
    # A Django ValidationError raised by a service is a 400 with the errors by field, like a serializer's.
    # https://www.django-rest-framework.org/api-guide/exceptions/#custom-exception-handling
    "EXCEPTION_HANDLER": "emailsys.api.api_exception_handler",
    # JSON that would fail below (nested ~1,000 deep, NUL, lone surrogates) is a 400 naming where; errors that
    # echo text UTF-8 cannot encode still render. https://www.django-rest-framework.org/api-guide/parsers/
    "DEFAULT_PARSER_CLASSES": [
        "emailsys.apijson.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_RENDERER_CLASSES": [
        "emailsys.apijson.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "emailsys API",
    "DESCRIPTION": "Campaigns, work orders and inbound processing.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and docs describe every operation to any active staff user (they show no rows).
    "SERVE_PERMISSIONS": ["emailsys.permissions.IsActiveStaff"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Operation ids as before the inbound paths at the site root (/results, /emails, /stats): "v1_..." for /api/.
    "SCHEMA_PATH_PREFIX": r"/api/",
    # One name for a choice set used by several fields (a step's name, the step a restart starts from).
    "ENUM_NAME_OVERRIDES": {
        "WorkOrderStepNameEnum": "workorders.models.WorkOrderStep.Name",
        "InboundEmailStatusEnum": "processing.models.InboundEmail.Status",
        "ImportJobKindEnum": "transfers.models.ImportJob.Kind",
        "ImportJobStatusEnum": "transfers.models.ImportJob.Status",
    },
}

# --- Login and API abuse ----------------------------------------------------------------------------
# README "API tokens, login lockouts and rate limits". Who the client is: behind TRUSTED_PROXY_COUNT reverse
# proxies the client's address is that many entries from the right of X-Forwarded-For; with 0 (the default) the
# header is ignored, since anyone can send it, and the address is the connection's. Lockouts and throttles use it.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

# Brute-force protection of the admin login and the API's POST /api/v1/auth/login/ (django-axes): after
# AXES_FAILURE_LIMIT wrong passwords for one username from one address, that pair is locked for
# AXES_COOLOFF_MINUTES after its last failure (failures while locked restart the cool-off). Lockouts are listed
# in the admin (Axes → Access attempts), where deleting one unlocks it; `manage.py axes_reset` clears them all.
# https://django-axes.readthedocs.io/en/latest/4_configuration.html
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "emailsys.auth.client_ip"
# HTML for the admin, JSON with Retry-After for the API.
AXES_LOCKOUT_CALLABLE = "emailsys.auth.lockout_response"

# API tokens (django-rest-knox): stored as a SHA-512 digest, their value shown once when made (login endpoint,
# admin, `manage.py create_api_token`). A new token expires after API_TOKEN_TTL_DAYS (0: never).
API_TOKEN_TTL_DAYS = env.int("API_TOKEN_TTL_DAYS", default=90)
REST_KNOX = {
    "TOKEN_TTL": timedelta(days=API_TOKEN_TTL_DAYS) if API_TOKEN_TTL_DAYS else None,
    "AUTH_HEADER_PREFIX": "Token",
}

# API throttling: anonymous requests per client address, authenticated ones per user; a 429 says when to retry
# (Retry-After). Rates are "<n>/<second|minute|hour|day>".
# https://www.django-rest-framework.org/api-guide/throttling/
REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] = [
    "rest_framework.throttling.AnonRateThrottle",
    "rest_framework.throttling.UserRateThrottle",
]
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] = {
    "anon": env("API_THROTTLE_ANON", default="60/minute"),
    "user": env("API_THROTTLE_USER", default="2000/minute"),
}
REST_FRAMEWORK["NUM_PROXIES"] = TRUSTED_PROXY_COUNT

# --- Celery -----------------------------------------------------------------------------------------
# https://docs.celeryq.dev/en/stable/userguide/configuration.html

CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=REDIS_URL)
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True

# One queue per worker pool; each pool's workers are started with `-Q <its queue>` only.
WORKER_POOLS = ("default", "sending", "workorders", "inbound")
# The queues each pool's workers consume, in priority order: the inbound pool takes fresh mail (`inbound`) before
# backfill (`inbound_backfill`: full syncs, resyncs after expiry, fallback syncs, re-classification). On Redis the
# order is strict (queue_order_strategy "priority" below); on RabbitMQ both queues are consumed side by side.
WORKER_POOL_QUEUES = {pool: (pool,) for pool in WORKER_POOLS} | {"inbound": ("inbound", "inbound_backfill")}
CELERY_TASK_DEFAULT_QUEUE = "default"
# RabbitMQ only: "quorum" declares the pools' queues as quorum queues (replicated over the cluster's nodes, the
# kind to use past one RabbitMQ node; README "Multi-host"). A queue's type is fixed when it is first declared: switch
# on a new vhost, or after deleting the classic queues, empty.
CELERY_QUEUE_TYPE = env("CELERY_QUEUE_TYPE", default="classic")
if CELERY_QUEUE_TYPE not in ("classic", "quorum"):
    raise ImproperlyConfigured(f"CELERY_QUEUE_TYPE must be classic or quorum, not {CELERY_QUEUE_TYPE!r}")
_queue_arguments = {"x-queue-type": "quorum"} if CELERY_QUEUE_TYPE == "quorum" else None
CELERY_TASK_QUEUES = tuple(
    Queue(name, Exchange(name, type="direct"), routing_key=name, queue_arguments=_queue_arguments)
    for queues in WORKER_POOL_QUEUES.values()
    for name in queues
)
CELERY_TASK_CREATE_MISSING_QUEUES = False
# Fixed task names, routed by name. Anything unmatched runs on `default`.
CELERY_TASK_ROUTES = {
    "campaigns.send_*": {"queue": "sending"},
    "workorders.*": {"queue": "workorders"},
    "processing.fallback_sync": {"queue": "inbound_backfill"},
    "processing.imap_poll*": {"queue": "inbound_backfill"},
    "processing.*": {"queue": "inbound"},
}

# Reliability (README "Celery reliability"): tasks are idempotent, so a message is acknowledged only after
# the task ran, and re-queued if the worker process dies mid-task; state lives in PostgreSQL rows.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int("CELERY_WORKER_PREFETCH_MULTIPLIER", default=1)
CELERY_WORKER_MAX_TASKS_PER_CHILD = env.int("CELERY_WORKER_MAX_TASKS_PER_CHILD", default=1000)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=240)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=300)
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# Redis broker: an unacknowledged message is redelivered after this many seconds. It must exceed the
# longest task and any countdown/ETA (we schedule with beat scans, not long ETAs).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
    "socket_connect_timeout": 5,
    "socket_timeout": 30,
    "retry_on_timeout": True,
    # A worker consuming several queues empties them in the order given (-Q inbound,inbound_backfill), not round
    # robin. Each other pool consumes one queue, where the order does not matter.
    "queue_order_strategy": "priority",
}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"socket_connect_timeout": 5, "socket_timeout": 30}
CELERY_TASK_PUBLISH_RETRY = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 3, "interval_start": 0, "interval_step": 0.5, "interval_max": 2}

# Beat: periodic tasks live in the database, declared in emailsys/periodic.py, created after migrate when missing,
# editable in the admin. The interval settings they name (HEARTBEAT_INTERVAL, CAMPAIGN_DISPATCH_INTERVAL,
# EVENT_SWEEP_INTERVAL, WORKORDER_SWEEP_INTERVAL; seconds) give a newly created row its first interval only.
CELERY_BEAT_SCHEDULER = "emailsys.beat:HeartbeatScheduler"
CELERY_BEAT_MAX_LOOP_INTERVAL = 5
# Only the beat holding a PostgreSQL advisory lock ticks (emailsys/beat_lock.py); the others stand by and ask again
# this often (seconds), so one takes over this long at most after the holder died. The lock needs a session of its
# own straight to PostgreSQL: behind pgbouncer in transaction mode, point this at the database directly (empty:
# DATABASE_URL's database, as it is).
BEAT_LOCK_DATABASE_URL = env("BEAT_LOCK_DATABASE_URL", default="")
BEAT_LOCK_RETRY_SECONDS = env.float("BEAT_LOCK_RETRY_SECONDS", default=1.0)
# Seconds between heartbeats (periodic task "emailsys: heartbeat": beat → broker → default pool).
HEARTBEAT_INTERVAL = env.int("HEARTBEAT_INTERVAL", default=10)
# Seconds between dashboard refreshes (periodic task "emailsys: dashboard refresh", default pool): the health it
# shows (workers online, queue depths, beat, SQS bridge) is probed then, never when a page or a send asks.
DASHBOARD_REFRESH_INTERVAL = env.int("DASHBOARD_REFRESH_INTERVAL", default=3)
# The dashboard shows the SQS bridge as down when the newest published event waits longer than this (seconds).
DASHBOARD_SQS_BEHIND_SECONDS = env.int("DASHBOARD_SQS_BEHIND_SECONDS", default=30)

# --- Campaigns --------------------------------------------------------------------------------------

# Fernet keys (comma-separated, newest first) that encrypt secrets at rest (SMTP passwords, ESP secrets). Add a
# new key in front, run `manage.py rotate_encryption_keys` (every encrypted field), then drop the old one.
# Generate: `manage.py generate_encryption_key`.
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS", default=[])
# Public address of this installation, for unsubscribe links in emails.
PUBLIC_BASE_URL = env("PUBLIC_BASE_URL", default="http://127.0.0.1:8000")
# Skip an address another active campaign contacted within this many days (0: off).
CAMPAIGN_CROSS_CONTACT_DAYS = env.int("CAMPAIGN_CROSS_CONTACT_DAYS", default=0)
# Seconds between the dispatcher's scans (the periodic task's interval; editable in the admin afterwards).
CAMPAIGN_DISPATCH_INTERVAL = env.int("CAMPAIGN_DISPATCH_INTERVAL", default=5)
# A send holds its claim (and a throttled account) this long; after it a crashed worker's send is recovered.
# Must exceed a whole SMTP exchange (CAMPAIGN_SMTP_TIMEOUT per reply).
CAMPAIGN_SEND_LEASE_SECONDS = env.int("CAMPAIGN_SEND_LEASE_SECONDS", default=300)
CAMPAIGN_SMTP_TIMEOUT = env.float("CAMPAIGN_SMTP_TIMEOUT", default=30.0)
# Where sender accounts' secrets may go (campaigns/services/destinations.py). SMTP AUTH over an unencrypted
# connection (security "none") only to loopback or these hosts (names as written in the account, never resolved).
SMTP_PLAINTEXT_AUTH_HOSTS = env.list("SMTP_PLAINTEXT_AUTH_HOSTS", default=[])
# ESP endpoint overrides (`esp_endpoint_url`) allowed: `scheme://host` (any port), `scheme://host:port`, or with a
# path prefix. Empty: accounts use their ESP's own API only.
ESP_ENDPOINT_ALLOWLIST = env.list("ESP_ENDPOINT_ALLOWLIST", default=[])
# Messages one sending thread keeps waiting for the server's reply to their final dot, each on its own SMTP
# connection (1: one message at a time). Servers that answer late then cost waiting, not threads.
CAMPAIGN_SMTP_AWAITING_PER_THREAD = env.int("CAMPAIGN_SMTP_AWAITING_PER_THREAD", default=4)
# Leads the dispatcher claims per scan, at most.
CAMPAIGN_DISPATCH_SCAN_LIMIT = env.int("CAMPAIGN_DISPATCH_SCAN_LIMIT", default=2000)
# The render budget of one email's template (subject, text and HTML together): past this many seconds, or this
# many characters of output, the render stops with an error that fails that recipient only (also the check of a
# template when it is saved, and the admin's preview).
TEMPLATE_RENDER_TIMEOUT_SECONDS = env.float("TEMPLATE_RENDER_TIMEOUT_SECONDS", default=2.0)
TEMPLATE_RENDER_MAX_BYTES = env.int("TEMPLATE_RENDER_MAX_BYTES", default=1_000_000)
# A file holding a clock offset in seconds, shared by all processes (tests and demos only). See emailsys/clock.py.
CLOCK_OFFSET_FILE = env("CLOCK_OFFSET_FILE", default="")

# --- Work orders ------------------------------------------------------------------------------------
# A worker holds a work order's lease this long, renewing it while it works; after it the sweeper hands the work
# order to another worker.
WORKORDER_LEASE_SECONDS = env.int("WORKORDER_LEASE_SECONDS", default=30)
# A run gives its lease up (and queues its own continuation) after this long: under the Celery time limit.
WORKORDER_SLICE_SECONDS = env.int("WORKORDER_SLICE_SECONDS", default=120)
# Seconds between work-order sweeps (periodic task "workorders: sweep"; editable in the admin afterwards).
WORKORDER_SWEEP_INTERVAL = env.int("WORKORDER_SWEEP_INTERVAL", default=5)

# --- Events: transactional outbox, SQS FIFO bridge (README "Events: outbox and SQS bridge") ---------------------

# Per stream: the handler (dotted path, imported when an event runs) and the worker pool (queue) it runs on.
EVENT_HANDLERS: dict[str, dict[str, str]] = {
    "workorder": {"handler": "workorders.services.events.workorder_event_handle", "queue": "workorders"},
    "archive": {"handler": "archive.services.archive_email_publish", "queue": "default"},
}
# A handler runs within these limits (soft: SoftTimeLimitExceeded, the event fails; hard: the process is killed).
EVENT_HANDLER_TIME_LIMIT = env.int("EVENT_HANDLER_TIME_LIMIT", default=1800)
# The sweeper (a periodic task, every EVENT_SWEEP_INTERVAL s): publishes outbox rows still unpublished this long
# after their commit, re-publishes rows SQS took but nobody received after EVENT_REPUBLISH_SECONDS, and dispatches
# again events dispatched but not started within EVENT_DISPATCH_TIMEOUT (a broker that lost its queue).
EVENT_SWEEP_INTERVAL = env.int("EVENT_SWEEP_INTERVAL", default=5)
EVENT_PUBLISH_GRACE_SECONDS = env.int("EVENT_PUBLISH_GRACE_SECONDS", default=5)
EVENT_REPUBLISH_SECONDS = env.int("EVENT_REPUBLISH_SECONDS", default=900)
EVENT_DISPATCH_TIMEOUT = env.int("EVENT_DISPATCH_TIMEOUT", default=120)
# Finished events (and their outbox rows) are forgotten after this many days; 0 keeps them. Keep it above SQS's
# message retention (at most 14 days), so a redelivered copy is still recognised.
EVENT_RETENTION_DAYS = env.int("EVENT_RETENTION_DAYS", default=30)
# SQS FIFO queue between the outbox and the workers; empty: events go straight to Celery after commit.
# https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/FIFO-queues.html
# Credentials come from the standard AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...) or the instance
# role. SQS_ENDPOINT_URL points at moto's server locally; SQS_QUEUE_URL skips the lookup by name.
SQS_QUEUE_NAME = env("SQS_QUEUE_NAME", default="")
SQS_QUEUE_URL = env("SQS_QUEUE_URL", default="")
SQS_ENDPOINT_URL = env("SQS_ENDPOINT_URL", default="")
SQS_REGION = env("SQS_REGION", default="us-east-1")
# A message received this many times without being recorded goes to the dead-letter queue (<name>-dlq.fifo).
SQS_MAX_RECEIVE_COUNT = env.int("SQS_MAX_RECEIVE_COUNT", default=5)
# Long polling (WaitTimeSeconds, at most 20) and how long a received message stays invisible to other bridges.
SQS_WAIT_SECONDS = env.int("SQS_WAIT_SECONDS", default=20)
SQS_VISIBILITY_TIMEOUT = env.int("SQS_VISIBILITY_TIMEOUT", default=30)

# --- Operations -------------------------------------------------------------------------------------

# /healthz: how long to wait for worker pools to answer, and how old beat's last tick may be.
HEALTHZ_WORKER_TIMEOUT = env.float("HEALTHZ_WORKER_TIMEOUT", default=1.0)
HEALTHZ_BEAT_MAX_AGE = env.float("HEALTHZ_BEAT_MAX_AGE", default=30.0)

LOG_LEVEL = env("LOG_LEVEL", default="INFO")
# plain: one text line per record; json: one JSON object per line (time, level, logger, message), for a log
# shipper. Periodic tasks' received/succeeded lines are DEBUG either way (emailsys/logs.py).
LOG_FORMAT = env("LOG_FORMAT", default="plain")
if LOG_FORMAT not in LOG_FORMATS:
    raise ImproperlyConfigured(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {LOG_FORMAT!r}")
LOGGING = logging_config(level=LOG_LEVEL, log_format=LOG_FORMAT)

# --- Security headers and deployment checks ---------------------------------------------------------
# `manage.py check --deploy` also checks FIELD_ENCRYPTION_KEYS (emailsys/checks.py); production.py refuses DEBUG.

# Content-Security-Policy on every response (django-csp): only this site's own scripts, styles, images and fonts;
# WebSockets of live pages to this same host ('self' covers ws:/wss: of the page's host). Views that need more say
# so with `csp.decorators.csp_update` (the Redoc page, captured mail). https://django-csp.readthedocs.io/en/latest/
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF, "data:"],
        "connect-src": [SELF],
        "worker-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
# /metrics answers only `Authorization: Bearer <this>` when set (production: set it, and give Prometheus the same
# token); empty leaves it open, for local use. /healthz stays open for probes.
METRICS_BEARER_TOKEN = env("METRICS_BEARER_TOKEN", default="")

# --- Inbound mail (processing/) --------------------------------------------------------------------------
# The provider simulator (the seed's FakeMail) is mounted at /simulator/ only when enabled: on in `make demo`
# (local settings) and the tests, off in production. With AUTOCONNECT, a message to a mailbox nobody connected yet
# connects it (our Mailbox row, its webhook subscription, a full sync), so the demo needs no setup.
INBOUND_SIMULATOR_ENABLED = env.bool("INBOUND_SIMULATOR_ENABLED", default=False)
INBOUND_SIMULATOR_AUTOCONNECT = env.bool("INBOUND_SIMULATOR_AUTOCONNECT", default=INBOUND_SIMULATOR_ENABLED)
INBOUND_SIMULATOR_RETENTION = env.int("INBOUND_SIMULATOR_RETENTION", default=10000)  # history entries per mailbox
_WEB_BASE_URL = f"http://127.0.0.1:{env.int('WEB_PORT', default=8000)}"
# Where the provider's API answers (a Mailbox row's provider_url overrides it) and where it posts notifications.
INBOUND_PROVIDER_URL = env("INBOUND_PROVIDER_URL", default=f"{_WEB_BASE_URL}/simulator")
INBOUND_WEBHOOK_URL = env("INBOUND_WEBHOOK_URL", default=f"{_WEB_BASE_URL}/webhook")
INBOUND_PROVIDER_TIMEOUT_SECONDS = env.float("INBOUND_PROVIDER_TIMEOUT_SECONDS", default=10.0)
INBOUND_PROVIDER_RETRIES = env.int("INBOUND_PROVIDER_RETRIES", default=3)  # per call, with exponential backoff
INBOUND_WEBHOOK_MAX_BYTES = env.int("INBOUND_WEBHOOK_MAX_BYTES", default=64 * 1024)  # larger bodies: 413
INBOUND_SYNC_LEASE_SECONDS = env.int("INBOUND_SYNC_LEASE_SECONDS", default=60)  # a killed sync frees the mailbox
INBOUND_FALLBACK_SYNC_INTERVAL = env.int("INBOUND_FALLBACK_SYNC_INTERVAL", default=120)  # catches lost webhooks
INBOUND_RESYNC_LIMIT = env.int("INBOUND_RESYNC_LIMIT", default=2000)  # messages read by a full sync or resync
INBOUND_POISON_ATTEMPTS = 3  # a history entry failing this often is skipped, with a warning on the mailbox
# The classifier (a dotted path to a class with `name`, `version` and `classify(parsed) -> Verdict`), and the
# confidence below which a statistical verdict becomes `unknown`.
INBOUND_CLASSIFIER = env("INBOUND_CLASSIFIER", default="processing.classifier.default.DefaultClassifier")
INBOUND_UNKNOWN_BELOW = env.float("INBOUND_UNKNOWN_BELOW", default=0.5)
# The seed's settings, with their meaning: classification processes of the inbound pool (the Procfile's
# --concurrency), attempts after the first failure, and the first retry's delay (doubling, with jitter).
PROCESSOR_WORKER_COUNT = env.int("PROCESSOR_WORKER_COUNT", default=3)
PROCESSOR_MAX_RETRIES = env.int("PROCESSOR_MAX_RETRIES", default=3)
PROCESSOR_RETRY_DELAY_MS = env.int("PROCESSOR_RETRY_DELAY_MS", default=1000)
# Messages per classification task: a task's own cost (broker round trips, task events, the batch's query, commit,
# live publish and metrics) was most of a message's at 10; bench/inbound at 100/s: p95 10–17 s at 10, 1.3 s at 50.
PROCESSOR_BATCH_SIZE = env.int("PROCESSOR_BATCH_SIZE", default=50)
# A stored message still queued after this long without a result lost its task: the fallback sync enqueues it again.
INBOUND_STALLED_SECONDS = env.int("INBOUND_STALLED_SECONDS", default=600)

# --- Sender mailboxes over IMAP (processing/services/imap.py, manage.py imap_idle) --------------------------------
# Each sender account's IMAP settings (admin: "IMAP settings") are polled by UID range; IDLE only wakes the poll.
# https://www.rfc-editor.org/rfc/rfc9051 (IMAP4rev2), https://www.rfc-editor.org/rfc/rfc2177 (IDLE)
IMAP_POLL_INTERVAL = env.int("IMAP_POLL_INTERVAL", default=60)  # beat polls every enabled IMAP mailbox this often
IMAP_TIMEOUT_SECONDS = env.float("IMAP_TIMEOUT_SECONDS", default=30.0)  # every socket operation (connect, read)
IMAP_BATCH_SIZE = env.int("IMAP_BATCH_SIZE", default=50)  # messages per UID FETCH
IMAP_PLAINTEXT_AUTH_HOSTS = env.list("IMAP_PLAINTEXT_AUTH_HOSTS", default=[])  # besides loopback: login without TLS
IMAP_IDLE_RENEW_SECONDS = env.int("IMAP_IDLE_RENEW_SECONDS", default=25 * 60)  # RFC 2177: re-issue IDLE within 29 min
IMAP_IDLE_BACKOFF_MAX_SECONDS = env.float("IMAP_IDLE_BACKOFF_MAX_SECONDS", default=60.0)  # reconnect backoff cap

# --- Inbound results: replies stop sequences, bounces suppress (campaigns/services/inbound.py) -----------------
# Called with each new classification, inside its transaction (each in a savepoint; an error is recorded on the
# message's last_error and the classification still commits): dotted paths to `handler(*, email, result, parsed)`.
INBOUND_RESULT_HANDLERS = env.list(
    "INBOUND_RESULT_HANDLERS", default=["campaigns.services.inbound.inbound_email_handle"]
)
# An account whose hard and soft bounces over its last 100 sends exceed this share is paused, with the reason.
ACCOUNT_BOUNCE_PAUSE_RATE = env.float("ACCOUNT_BOUNCE_PAUSE_RATE", default=0.05)
# The fewest sends in that window before the rate may pause an account (1 bounce in 3 sends proves nothing).
ACCOUNT_BOUNCE_PAUSE_MIN_SENDS = env.int("ACCOUNT_BOUNCE_PAUSE_MIN_SENDS", default=20)
# An out-of-office answer "away until <date>" postpones that lead's next step to the day after the date.
AUTO_REPLY_POSTPONE = env.bool("AUTO_REPLY_POSTPONE", default=False)

# --- Archive (archive/; README "Archive") ----------------------------------------------------------------------
# `manage.py archive_emails` stores each message of the archive queue (SQS standard queue, on SQS_ENDPOINT_URL /
# SQS_REGION like the event bus) as JSON in ARCHIVE_LOCAL_DIR, or in S3 when ARCHIVE_S3_BUCKET is set.
# Publish every newly stored inbound message to the archive queue (through the outbox, stream "archive").
ARCHIVE_ENABLED = env.bool("ARCHIVE_ENABLED", default=False)
# The queue by name (looked up; `archive_emails --setup` creates it and <name>-dlq), or by URL.
ARCHIVE_QUEUE_NAME = env("ARCHIVE_QUEUE_NAME", default="emailsys-archive")
ARCHIVE_QUEUE_URL = env("ARCHIVE_QUEUE_URL", default="")
# A message received this many times without being archived goes to the dead-letter queue (redrive policy).
ARCHIVE_MAX_RECEIVE_COUNT = env.int("ARCHIVE_MAX_RECEIVE_COUNT", default=5)
# The seed's settings: seconds between polls of an idle queue (a long poll of up to 20 s, then a pause), messages
# per receive (1-10), and how long a received message stays invisible (also the queue's attribute at --setup).
POLL_INTERVAL_SECONDS = env.int("POLL_INTERVAL_SECONDS", default=30)
MAX_MESSAGES_PER_POLL = env.int("MAX_MESSAGES_PER_POLL", default=10)
VISIBILITY_TIMEOUT_SECONDS = env.int("VISIBILITY_TIMEOUT_SECONDS", default=300)
# Local storage directory, used when no bucket is named.
ARCHIVE_LOCAL_DIR = env.path("ARCHIVE_LOCAL_DIR", default=BASE_DIR / "var" / "archive")
# S3 storage: the bucket, an endpoint for S3-compatible stores or moto, the region, and a KMS key for SSE-KMS.
ARCHIVE_S3_BUCKET = env("ARCHIVE_S3_BUCKET", default="")
ARCHIVE_S3_ENDPOINT_URL = env("ARCHIVE_S3_ENDPOINT_URL", default="")
ARCHIVE_S3_REGION = env("ARCHIVE_S3_REGION", default=SQS_REGION)
ARCHIVE_S3_KMS_KEY_ID = env("ARCHIVE_S3_KMS_KEY_ID", default="")
# /livez (and archiver_health() for /healthz) fail when the archiver's loop is silent this long (seconds).
ARCHIVE_HEARTBEAT_MAX_AGE = env.float("ARCHIVE_HEARTBEAT_MAX_AGE", default=60.0)
# Address `archive_emails --health-port` listens on (0.0.0.0 in a container, for the orchestrator's probes).
ARCHIVE_HEALTH_HOST = env("ARCHIVE_HEALTH_HOST", default="127.0.0.1")
