"""Settings for Lookout.

This is the only module that reads the environment. Two modes:

- embedded (default): SQLite in ``var/`` and Channels' in-memory layer, all
  in one process;
- production: ``DATABASE_URL`` (PostgreSQL) and ``REDIS_URL``
  (channels-redis), several daphne processes and separate workers.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("LOOKOUT_VAR_DIR", BASE_DIR / "var"))

DEBUG = os.environ.get("LOOKOUT_DEBUG", "0") == "1"
SECRET_KEY = os.environ.get("LOOKOUT_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG and os.environ.get("LOOKOUT_REQUIRE_SECRET_KEY") == "1":
        raise RuntimeError("LOOKOUT_SECRET_KEY must be set in production")
    SECRET_KEY = "lookout-embedded-insecure-key"
ALLOWED_HOSTS = os.environ.get("LOOKOUT_ALLOWED_HOSTS", "*").split(",")
# Origins besides this host's own that may post forms and open WebSockets
# signed in by session: "https://shop.example.com,https://*.example.com".
CSRF_TRUSTED_ORIGINS = [
    origin
    for origin in os.environ.get("LOOKOUT_CSRF_TRUSTED_ORIGINS", "").split(",")
    if origin
]
# Behind a proxy that rewrites Host and sends X-Forwarded-Host instead.
USE_X_FORWARDED_HOST = os.environ.get("LOOKOUT_USE_X_FORWARDED_HOST") == "1"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "channels",
    "events",
    "readmodels",
    "accounts",
    "streams",
    "api",
]

MIDDLEWARE = [
    "api.middleware.DatabaseBusyMiddleware",
    "api.middleware.EarlyRefusalMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

# Databases. SQLite runs in WAL mode so readers never wait for the writer,
# and every transaction starts IMMEDIATE so that two commands never both
# read a stream and then fail to upgrade to a write lock.
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    # Connections come from a bounded pool per process (psycopg_pool,
    # through Django), not one per request thread: under ASGI every request
    # runs in a thread of its own, and without a pool one daphne process
    # under 150 concurrent clients opened more connections than PostgreSQL
    # allows. A request past the pool's size waits for a connection; one
    # that waits LOOKOUT_DB_POOL_TIMEOUT seconds in vain is answered 503
    # (api.middleware.DatabaseBusyMiddleware).
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options["pool"] = {
        "min_size": 1,
        "max_size": int(os.environ.get("LOOKOUT_DB_POOL_SIZE", "20")),
        "timeout": float(os.environ.get("LOOKOUT_DB_POOL_TIMEOUT", "10")),
    }
    # psycopg's default, which Django turns off: a statement run five times
    # on one connection is prepared. Only server-side binding cursors (the
    # event store's append) prepare; Django's own queries bind client-side.
    _options["prepare_threshold"] = 5
    # One test database per test run, so that runs side by side never meet.
    DATABASES["default"]["TEST"] = {
        "NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"
    }
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("LOOKOUT_SQLITE_PATH", VAR_DIR / "lookout.sqlite3"),
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": ("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"),
            },
            # A file, not memory: concurrency tests need real connections.
            # One per test run, so that runs side by side never meet.
            "TEST": {"NAME": str(VAR_DIR / f"test-lookout-{os.getpid()}.sqlite3")},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Channel layer: in-memory for the embedded mode, Redis in production.
# Explicit pool settings: with defaults, a burst of ~100 connects exhausted
# the pool and reads timed out (see docs/production.md).
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "max_connections": 200,
                        "socket_timeout": None,
                    }
                ],
                "capacity": 1000,
                "expiry": 30,
                "prefix": os.environ.get("LOOKOUT_REDIS_PREFIX", "lookout"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 1000, "expiry": 30},
        }
    }

AUTH_PASSWORD_VALIDATORS = []

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["api.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "api.errors.handle_exception",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "COERCE_DECIMAL_TO_STRING": True,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Lookout API",
    "DESCRIPTION": "Event-sourced orders: commands, read models and watches.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.add_watch_routes",
    ],
}

# Lookout's own tunables; defaults and meaning live in each app's conf.py.
EVENTS: dict = {}
STREAMS: dict = {}
if os.environ.get("LOOKOUT_HEARTBEAT_SECS"):
    STREAMS["HEARTBEAT_SECS"] = float(os.environ["LOOKOUT_HEARTBEAT_SECS"])
if os.environ.get("LOOKOUT_DRAIN_SECS"):
    STREAMS["DRAIN_SECS"] = float(os.environ["LOOKOUT_DRAIN_SECS"])
if os.environ.get("LOOKOUT_MAX_SUBSCRIBER_LAG"):
    STREAMS["MAX_SUBSCRIBER_LAG"] = int(os.environ["LOOKOUT_MAX_SUBSCRIBER_LAG"])
if os.environ.get("LOOKOUT_SOCKET_SEND_BUFFER_BYTES"):
    STREAMS["SOCKET_SEND_BUFFER_BYTES"] = int(
        os.environ["LOOKOUT_SOCKET_SEND_BUFFER_BYTES"]
    )
if os.environ.get("LOOKOUT_GC_THRESHOLDS"):
    # "50000,20,10", or "default" for CPython's own.
    _thresholds = os.environ["LOOKOUT_GC_THRESHOLDS"]
    STREAMS["GC_THRESHOLDS"] = (
        None
        if _thresholds == "default"
        else tuple(int(n) for n in _thresholds.split(","))
    )
if os.environ.get("LOOKOUT_WATCH_PAGE_LOGIN"):
    STREAMS["WATCH_PAGE_LOGIN"] = os.environ["LOOKOUT_WATCH_PAGE_LOGIN"] == "1"
# The embedded mode runs the projection worker inside the server process;
# production runs `manage.py run_worker` processes instead.
_worker_default = "0" if DATABASE_URL else "1"
READMODELS = {
    "WORKER_IN_SERVER": os.environ.get("LOOKOUT_WORKER_IN_SERVER", _worker_default)
    == "1",
}

LOG_LEVEL = os.environ.get("LOOKOUT_LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "filters": {"oversized_body": {"()": "api.errors.OversizedBodyLogFilter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        **{
            name: {"level": LOG_LEVEL}
            for name in ("events", "readmodels", "streams", "accounts", "api")
        },
        "django.security.RequestDataTooBig": {"filters": ["oversized_body"]},
    },
}
