"""Settings, all read from the environment (see .env.example).

With nothing set, the project runs on an embedded SQLite file and an in-process
cache, with Celery tasks executed in-process: the zero-setup first run.
"""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from botplatform.env import (
    bot_token_keys,
    cache_config,
    database_config,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_rate,
    env_str,
    trusted_proxy_count,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEV_SECRET_KEY = "django-insecure-development-key-do-not-use-in-production"

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY") or DEV_SECRET_KEY
if not DEBUG and SECRET_KEY == DEV_SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY must be set when DEBUG is off (generate one with "
        "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`)."
    )
if not DEBUG and len(SECRET_KEY) < 50:
    raise ImproperlyConfigured("SECRET_KEY must be at least 50 characters long when DEBUG is off.")

# Fernet keys encrypting bot tokens at rest, newest first (rotation: docs/telegram.md).
BOT_TOKEN_KEYS = bot_token_keys(env_list("BOT_TOKEN_KEYS"), secret_key=SECRET_KEY, debug=DEBUG)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "botplatform",
    "users",
    "workflows",
    "analytics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "botplatform.urls"
WSGI_APPLICATION = "botplatform.wsgi.application"
ASGI_APPLICATION = "botplatform.asgi.application"

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

# --- Data stores -----------------------------------------------------------------

DATABASE_URL = env_str("DATABASE_URL")
# DATABASE_HEALTH_CHECKS=false saves Django's `SELECT 1` before a request's first query,
# which DATABASE_HEALTH_CHECK_INTERVAL already limits to once a second a connection
# (botplatform/postgresql/base.py; 0 = before every request);
# DATABASE_PREPARED_STATEMENTS=false for PgBouncer in transaction mode before 1.21.
DATABASES = {
    "default": database_config(
        DATABASE_URL,
        str(BASE_DIR),
        health_checks=env_bool("DATABASE_HEALTH_CHECKS", True),
        prepared=env_bool("DATABASE_PREPARED_STATEMENTS", True),
    )
}
DATABASE_HEALTH_CHECK_INTERVAL = env_float("DATABASE_HEALTH_CHECK_INTERVAL", 1.0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Staff permissions come from project roles (botplatform/roles.py), never from
# permissions or groups picked by hand.
AUTHENTICATION_BACKENDS = ["botplatform.roles.RoleBackend"]

REDIS_URL = env_str("REDIS_URL")
CACHES = {"default": cache_config(REDIS_URL)}

# --- Celery --------------------------------------------------------------------
# The broker defaults to REDIS_URL; with neither set, tasks run in-process.

CELERY_TASK_ALWAYS_EAGER = not (env_str("CELERY_BROKER_URL") or REDIS_URL)
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL or "memory://"
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 300)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 240)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # A SIGKILLed worker's unacknowledged task comes back after this long (Redis broker).
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600),
    # How often a worker looks for unacknowledged tasks of dead workers (Redis broker).
    "unacked_restore_interval": env_int("CELERY_UNACKED_RESTORE_INTERVAL", 10),
    "unacked_restore_throttle": env_int("CELERY_UNACKED_RESTORE_THROTTLE", 10),
}
CELERY_BEAT_SCHEDULE: dict = {}

# --- Telegram ------------------------------------------------------------------

TELEGRAM_API_URL = env_str("TELEGRAM_API_URL", "https://api.telegram.org").rstrip("/")
if not TELEGRAM_API_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured("TELEGRAM_API_URL must be an http:// or https:// URL")

# --- Auth, i18n, static ----------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
# The bot's own texts in Russian (locale/ru/LC_MESSAGES/django.po; the English msgids
# are the source). The admin stays in LANGUAGE_CODE; the engine activates each bot
# user's language while it handles their update.
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Files operators upload for message steps (botplatform/media.py). Not served by the
# app: the bots upload them to Telegram. Any storage backend works (set STORAGES).
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "media")))
MEDIA_URL = "media/"
MEDIA_UPLOAD_MAX_MB = env_int("MEDIA_UPLOAD_MAX_MB", 50)  # Telegram's own bot upload limit
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Security (production) -------------------------------------------------------

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz/?$", r"^metrics/?$"]
# Cookies only over HTTPS in production; SECURE_COOKIES=false for a plain-HTTP trial.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
# Submitting a domain to the browsers' HSTS preload list is hard to undo, so it is the
# operator's decision (SECURE_HSTS_PRELOAD=true), not a default worth a warning.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

# --- Logging -----------------------------------------------------------------------

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact_secrets": {"()": "botplatform.logging.RedactSecretsFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(process)d: %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact_secrets"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "TeleBot": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}

# --- Telegram --------------------------------------------------------------------
# Knobs of the runtime (docs/telegram.md). Tests shorten the timeouts through env.

# Dotted path of the update handler (botplatform/telegram/handler.py: UpdateHandler);
# the default is the workflows application (bot users, referrals, the engine).
TELEGRAM_EVENT_HANDLER = env_str("TELEGRAM_EVENT_HANDLER", "workflows.handler.handler")
TELEGRAM_POLL_TIMEOUT = env_int("TELEGRAM_POLL_TIMEOUT", 25)  # getUpdates long poll, s
TELEGRAM_LEASE_TTL = env_int("TELEGRAM_LEASE_TTL", 15)  # s; renewed every TTL/3
TELEGRAM_DISCOVERY_INTERVAL = env_int("TELEGRAM_DISCOVERY_INTERVAL", 10)  # s, --all
TELEGRAM_CHAT_WORKERS = env_int("TELEGRAM_CHAT_WORKERS", 8)
# threads writing polled batches to the journal (pollers hold no database connection)
TELEGRAM_RECORDERS = env_int("TELEGRAM_RECORDERS", 2)
TELEGRAM_BACKOFF_MAX = env_int("TELEGRAM_BACKOFF_MAX", 60)  # s, network errors / 5xx
TELEGRAM_SEND_MAX_WAIT = env_int("TELEGRAM_SEND_MAX_WAIT", 120)  # s spent honouring 429s
# runbot handles each getUpdates batch in one transaction (docs/performance.md)
TELEGRAM_BATCH_HANDLING = env_bool("TELEGRAM_BATCH_HANDLING", True)
TELEGRAM_MAX_ATTEMPTS = env_int("TELEGRAM_MAX_ATTEMPTS", 3)  # handler failures per update
TELEGRAM_SHUTDOWN_GRACE = env_int("TELEGRAM_SHUTDOWN_GRACE", 30)  # s to finish in-flight
# runbot: an update's handler running longer is stopped and quarantined (docs/reliability.md)
TELEGRAM_UPDATE_BUDGET = max(env_int("TELEGRAM_UPDATE_BUDGET", 10), 1)  # s
# runbot exits (tracebacks on stderr) when frozen this long; its supervisor restarts it
TELEGRAM_FREEZE_EXIT = max(env_int("TELEGRAM_FREEZE_EXIT", 30), 2)  # s
# runner stops (crash, kill -9, freeze) during one update before it is quarantined
TELEGRAM_QUARANTINE_AFTER = max(env_int("TELEGRAM_QUARANTINE_AFTER", 2), 1)
TELEGRAM_CHAT_SEND_LIMIT = env_int("TELEGRAM_CHAT_SEND_LIMIT", 3)  # messages per chat ...
TELEGRAM_CHAT_SEND_WINDOW_MS = env_int("TELEGRAM_CHAT_SEND_WINDOW_MS", 3000)  # ... per window
# A member's "last seen" is stamped at most this often: a chatty user costs no write.
USER_LAST_SEEN_RESOLUTION_SECONDS = max(env_int("USER_LAST_SEEN_RESOLUTION_SECONDS", 300), 1)
TELEGRAM_WEBHOOK_ASYNC = env_bool("TELEGRAM_WEBHOOK_ASYNC", False)  # hand off to Celery
TELEGRAM_WEBHOOK_RATE = env_rate("TELEGRAM_WEBHOOK_RATE", "6000/m")  # per bot (GCRA, ratelimit.py)
ADMIN_LOGIN_RATE = env_str("ADMIN_LOGIN_RATE", "10/m")  # per username and client address
# Per username over all addresses (one account hammered from many addresses).
ADMIN_LOGIN_USERNAME_RATE = env_str("ADMIN_LOGIN_USERNAME_RATE", "30/m")
# Per client address over all usernames (one address trying many accounts).
ADMIN_LOGIN_ADDRESS_RATE = env_str("ADMIN_LOGIN_ADDRESS_RATE", "60/m")
# Proxies in front of the app that append to X-Forwarded-For (the documented TLS proxy:
# 1). The client address is the entry that many places from the right; 0 ignores the
# header (REMOTE_ADDR), since a client can write anything into it.
TRUSTED_PROXY_COUNT = trusted_proxy_count(env_int("TRUSTED_PROXY_COUNT", 0))
RATELIMIT_CACHE_PREFIX = "rate_limit:django:"
# Public base URL for the admin's "set webhook" action (else the admin request's own).
TELEGRAM_WEBHOOK_BASE_URL = env_str("TELEGRAM_WEBHOOK_BASE_URL")
TELEGRAM_HTTP_TIMEOUT = env_int("TELEGRAM_HTTP_TIMEOUT", 30)  # s per Bot API call (+ long poll)
# Finished updates are kept this long (Telegram redelivers for at most 24 hours).
TELEGRAM_UPDATE_RETENTION_DAYS = max(env_int("TELEGRAM_UPDATE_RETENTION_DAYS", 7), 2)
CELERY_BEAT_SCHEDULE["telegram.updates_prune"] = {
    "task": "telegram.updates_prune",
    "schedule": 3600,
}
CELERY_BEAT_SCHEDULE["telegram.deferred_sends_sweep"] = {
    "task": "telegram.deferred_sends_sweep",
    "schedule": 60,
}

# --- The POS/CRM API (/api/v1/, botplatform/api/) ----------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "botplatform.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["botplatform.api.parsers.BoundedJSONParser"],
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Bot platform POS/CRM API",
    "DESCRIPTION": "Identify customers, accrue on purchases, redeem with holds, refund, "
    "send events. See docs/api.md.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}
# Hold expiry sweep: open holds past their expiry free their bonuses.
CELERY_BEAT_SCHEDULE["users.holds_expire"] = {"task": "users.holds_expire", "schedule": 60}
CELERY_BEAT_SCHEDULE["users.api_idempotency_prune"] = {
    "task": "users.api_idempotency_prune",
    "schedule": 3600,
}
# Webhook deliveries whose retry is due (and any the broker lost) are queued again.
CELERY_BEAT_SCHEDULE["workflows.webhooks_due"] = {
    "task": "workflows.webhooks_due",
    "schedule": 60,
}

# --- Loyalty ---------------------------------------------------------------------

# Expire earned bonuses of projects with an expiry period (idempotent, daily keys).
CELERY_BEAT_SCHEDULE["users.bonuses_expire"] = {
    "task": "users.bonuses_expire",
    "schedule": env_int("BONUS_EXPIRY_INTERVAL_SECONDS", 3600),
}

# --- Engine --------------------------------------------------------------------
# A wait for the user without its own "timeout" ends after this many seconds.
WORKFLOW_WAIT_TIMEOUT = env_int("WORKFLOW_WAIT_TIMEOUT", 86400)
# Wait timeouts and delays are fired by a poller this often (seconds; 0 turns it off,
# leaving the once-a-minute sweep). The bot runner runs it, and `manage.py runtimers`
# where no runner does (webhook-only setups). See workflows/timers.py.
WORKFLOW_TIMER_POLL_INTERVAL = float(env_str("WORKFLOW_TIMER_POLL_INTERVAL", "0.5") or 0)
WORKFLOW_TIMER_TASK = "workflows.tasks.timers_fire"
# Threads firing one poll's due timers side by side (each holds a database connection).
WORKFLOW_TIMER_THREADS = env_int("WORKFLOW_TIMER_THREADS", 4)
CELERY_BEAT_SCHEDULE["workflows-executions-sweep"] = {
    "task": "workflows.tasks.executions_sweep",
    "schedule": 60.0,
}

# --- Performance ---
# /metrics: a scraper sends "Authorization: Bearer <METRICS_TOKEN>"; superuser sessions
# may read it too (the figures span every tenant). Empty token: superusers only.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
METRICS_FLUSH_INTERVAL = float(env_str("METRICS_FLUSH_INTERVAL", "5") or 5)  # s

# --- Admin -----------------------------------------------------------------------
# Broadcasts use at most this share of a bot's send rate (replies keep the rest) and,
# when set, their own Celery queue (run a worker with `-Q celery,broadcasts`).
BROADCAST_RATE_SHARE = float(env_str("BROADCAST_RATE_SHARE", "0.5"))
BROADCAST_QUEUE = env_str("BROADCAST_QUEUE", "")
# Without a broker (tasks run in-process) a broadcast is sent to the end by the request.
BROADCAST_SEND_INLINE = CELERY_TASK_ALWAYS_EAGER
CELERY_BEAT_SCHEDULE["workflows-broadcasts-due"] = {
    "task": "workflows.broadcasts_due",
    "schedule": 60.0,
}

# --- Resilience ------------------------------------------------------------------
# After a Redis failure, skip Redis for this many seconds, then probe it (breaker.py).
REDIS_BREAKER_SECONDS = env_int("REDIS_BREAKER_SECONDS", 5)
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_DEFAULT_QUEUE", "celery")

# --- Background work you can see (botplatform/heartbeat.py) ---------------------------
# The home page and /healthz warn when no worker took a task, or the scheduler sent
# none, for this long, or the oldest queued task waits longer than this.
HEALTH_WORKER_STALE_SECONDS = env_int("HEALTH_WORKER_STALE_SECONDS", 300)
HEALTH_SCHEDULER_STALE_SECONDS = env_int("HEALTH_SCHEDULER_STALE_SECONDS", 300)
HEALTH_QUEUE_AGE_SECONDS = env_int("HEALTH_QUEUE_AGE_SECONDS", 120)

# --- Programme analytics (analytics/) -----------------------------------------------
# The daily figures are recomputed (today, yesterday and days with late data) this often.
CELERY_BEAT_SCHEDULE["analytics.rollup"] = {
    "task": "analytics.rollup",
    "schedule": env_int("ANALYTICS_ROLLUP_INTERVAL", 300),
}
