"""Typed readers for settings that come from the environment.

Kept apart from ``settings.py`` so the parsing rules can be unit-tested without
re-importing the settings module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def env_str(name: str, default: str = "", environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    return environ.get(name, default).strip()


def env_bool(name: str, default: bool = False, environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    raw = environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {raw!r}")


def env_int(name: str, default: int, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None


def env_float(
    name: str, default: float, environ: Mapping[str, str] | None = None, *, maximum: float = 3600
) -> float:
    """A number of seconds: finite, from 0 to ``maximum`` (a typo must not disable
    what it spaces out, as ``inf`` or ``nan`` would)."""
    environ = os.environ if environ is None else environ
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= maximum:  # also false for nan
        shown = repr(raw[:20])[:60]
        raise ImproperlyConfigured(f"{name} must be a number from 0 to {maximum:g}, got {shown}")
    return value


_RATE_UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_RATE_MAX_COUNT = 10**9


def rate_parse(text: str) -> tuple[int, int]:
    """A rate such as ``6000/m`` or ``5/10s`` as (events, window in ms).

    The format django-ratelimit takes: a positive count, ``/``, an optional positive
    multiplier and a unit (s, m, h, d). Raises ValueError naming what is wrong."""
    count, slash, period = str(text).strip().partition("/")
    unit = period[-1:].lower()
    multiplier = period[:-1] or "1"
    if (
        not slash
        or unit not in _RATE_UNITS_MS
        or not (count.isascii() and count.isdigit() and 0 < len(count) <= 10)
        or not (multiplier.isascii() and multiplier.isdigit() and 0 < len(multiplier) <= 6)
        or not 0 < int(count) <= _RATE_MAX_COUNT
        or int(multiplier) == 0
    ):
        shown = repr(str(text)[:20])[:60]  # a hostile value is not echoed at length
        raise ValueError(
            f"{shown} is not a rate: write events/period, e.g. 6000/m or 5/10s "
            "(period units s, m, h, d)"
        )
    return int(count), int(multiplier) * _RATE_UNITS_MS[unit]


def env_rate(name: str, default: str, environ: Mapping[str, str] | None = None) -> str:
    """A rate setting (see :func:`rate_parse`), checked at start-up."""
    value = env_str(name, default, environ)
    try:
        rate_parse(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None
    return value


def env_list(
    name: str, default: list[str] | None = None, environ: Mapping[str, str] | None = None
) -> list[str]:
    """Comma-separated list; blank items are dropped."""
    environ = os.environ if environ is None else environ
    raw = environ.get(name)
    if raw is None:
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def database_config(
    url: str, base_dir: str, *, health_checks: bool = True, prepared: bool = True
) -> dict:
    """DATABASES['default'] for a URL; an empty URL means the embedded SQLite file.

    PostgreSQL gets persistent connections with health checks so that long-running
    processes (the bot runner, Celery) survive a database restart. ``prepared``:
    server-side parameter binding, so psycopg prepares a statement the connection
    has run five times: the hot path's statements are then neither quoted in Python
    nor parsed and planned by the server again (``docs/performance.md``). Off behind
    PgBouncer in transaction mode older than 1.21 (``docs/scaling.md``).
    """
    import dj_database_url

    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(base_dir, "db.sqlite3"),
            "OPTIONS": {"timeout": 20},
        }
    scheme = url.split(":", 1)[0].lower()
    if scheme not in {"postgres", "postgresql", "pgsql", "sqlite"}:
        raise ImproperlyConfigured(
            f"DATABASE_URL must be a postgres:// or sqlite:// URL, got scheme {scheme!r}"
        )
    # Health checks cost a `SELECT 1` round trip on the first query after a request
    # starts, at most once per DATABASE_HEALTH_CHECK_INTERVAL a connection (our
    # backend, botplatform/postgresql; the runner calls close_old_connections at most
    # once a second per worker, lanes.ConnectionCheck). Without them a connection the
    # server dropped fails the one request or update that finds it (the webhook
    # answers 503 and Telegram retries; the runner retries the update) and Django
    # closes it after the error.
    config = dj_database_url.parse(url, conn_max_age=600, conn_health_checks=health_checks)
    if config["ENGINE"] == "django.db.backends.postgresql":
        config["ENGINE"] = "botplatform.postgresql"  # Django's, health checks spaced out
        config.setdefault("OPTIONS", {})
        config["OPTIONS"].setdefault("connect_timeout", 5)
        config["OPTIONS"].setdefault("server_side_binding", prepared)
        if prepared:  # Django turns psycopg's preparing off unless given a threshold
            config["OPTIONS"].setdefault("prepare_threshold", 5)
    return config


def cache_config(redis_url: str) -> dict:
    """CACHES['default']: django-redis when REDIS_URL is set, else process memory.

    The Redis backend falls back to process memory while Redis is down and goes back
    by itself (botplatform/cache_backend.py, botplatform/breaker.py).
    """
    if not redis_url:
        # Process memory that never keeps what another process may change (see there).
        return {
            "BACKEND": "botplatform.cache_backend.ProcessLocMemCache",
            "LOCATION": "botplatform",
        }
    if not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured("REDIS_URL must start with redis://, rediss:// or unix://")
    pool_kwargs: dict = {
        "max_connections": 100,
        "health_check_interval": 30,
        "retry_on_timeout": False,
    }
    if redis_url.startswith("redis://"):
        # One circuit breaker per server, shared by every user of the pool (cache,
        # locks, rate limits, leases): a dead Redis costs one timeout, not one per call.
        from botplatform.breaker import BreakerConnection

        pool_kwargs["connection_class"] = BreakerConnection
    return {
        # django-redis, falling back to process memory while Redis is unreachable.
        "BACKEND": "botplatform.cache_backend.ResilientRedisCache",
        "LOCATION": redis_url,
        # Keys are stored exactly as botplatform.cache names them (no prefix, no version).
        "KEY_FUNCTION": "botplatform.cache.raw_key",
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "PARSER_CLASS": "redis._parsers.hiredis._HiredisParser",
            "SOCKET_CONNECT_TIMEOUT": 1.0,
            "SOCKET_TIMEOUT": 1.0,
            "CONNECTION_POOL_KWARGS": pool_kwargs,
        },
    }


def bot_token_keys(keys: list[str], *, secret_key: str, debug: bool) -> list[str]:
    """BOT_TOKEN_KEYS: Fernet keys, newest first; a SECRET_KEY-derived one only in DEBUG.

    Production refuses to start without a key: a token encrypted under a key derived
    from SECRET_KEY would become unreadable the day SECRET_KEY is rotated.
    """
    import base64
    import hashlib

    from cryptography.fernet import Fernet

    if not keys:
        if not debug:
            raise ImproperlyConfigured(
                "BOT_TOKEN_KEYS must be set when DEBUG is off: it encrypts the bot tokens. "
                "Generate one with `python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`."
            )
        digest = hashlib.sha256(b"bot-token-key:" + secret_key.encode()).digest()
        return [base64.urlsafe_b64encode(digest).decode()]
    for number, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())
        except ValueError:
            raise ImproperlyConfigured(
                f"BOT_TOKEN_KEYS: key {number} is not a Fernet key (44 characters of "
                "url-safe base64, as Fernet.generate_key() prints)."
            ) from None
    return keys


def trusted_proxy_count(value: int) -> int:
    """TRUSTED_PROXY_COUNT: how many proxies in front of the app append X-Forwarded-For."""
    if value < 0:
        raise ImproperlyConfigured("TRUSTED_PROXY_COUNT cannot be negative.")
    return value
