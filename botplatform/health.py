"""Liveness of the parts the platform depends on: database, cache, broker.

The cache check also says which cache this is (``kind``: ``redis`` or ``in-process``)
and, with Redis configured, whether Redis answers or the in-process fallback is in use
(``redis_available``, ``since``; ``degraded`` at the top level). Without REDIS_URL
(the embedded default) there is no Redis to be up or down: ``redis_available`` is
null, ``redis`` says "not configured", and the instance is not degraded.
"""

from __future__ import annotations

import time
import uuid

from django.conf import settings
from django.core.cache import cache
from django.db import connection

from botplatform.cache_backend import ResilientRedisCache, cache_status
from botplatform.heartbeat import background_report

KIND_REDIS = "redis"
KIND_IN_PROCESS = "in-process"


def _cache_kind() -> str:
    from django.core.cache import caches

    return KIND_REDIS if isinstance(caches["default"], ResilientRedisCache) else KIND_IN_PROCESS


def _timed(check) -> dict:
    started = time.perf_counter()
    try:
        detail = check()
    except Exception as exc:
        return {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}"[:300],
            "ms": round((time.perf_counter() - started) * 1000, 1),
        }
    result = {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}
    if detail:
        result["backend"] = detail
    return result


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def _check_cache() -> str:
    probe = f"healthz:{uuid.uuid4().hex}"
    cache.set(probe, "1", timeout=5)
    value = cache.get(probe)
    cache.delete(probe)
    if value != "1":
        raise RuntimeError("cache did not return the value just written")
    if _cache_kind() == KIND_IN_PROCESS:
        return "in-process memory (no REDIS_URL)"
    status = cache_status()
    if not status["redis_available"]:
        return "memory fallback (Redis unreachable)"
    return status["backend"]


def _check_broker() -> str:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return "in-process (no broker configured)"
    from botplatform.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        return conn.transport_cls if isinstance(conn.transport_cls, str) else "broker"


def health_report() -> dict:
    """One check per dependency; ``ok`` is true only when every check passes."""
    checks = {
        "database": _timed(_check_database),
        "cache": _timed(_check_cache),
        "broker": _timed(_check_broker),
    }
    # Redis down is a degradation, not a failure: the platform keeps answering from the
    # in-process fallbacks, so a load balancer must not take the instance out.
    # Without REDIS_URL nothing is degraded: process memory is the configured cache.
    kind = _cache_kind()
    checks["cache"]["kind"] = kind
    if kind == KIND_REDIS:
        status = cache_status()
        redis_available = bool(status["redis_available"])
        checks["cache"]["redis_available"] = redis_available
        checks["cache"]["redis"] = "up" if redis_available else "unreachable"
        checks["cache"]["since"] = status["since"]
        degraded = not redis_available
    else:
        checks["cache"]["redis_available"] = None
        checks["cache"]["redis"] = "not configured"
        checks["cache"]["since"] = None
        degraded = False
    # Worker, scheduler and queue age: a stopped worker does not make the instance
    # unfit to serve (the load balancer must keep it), so it degrades, never fails.
    try:
        background = background_report()
    except Exception as exc:  # the database is down: the database check says so
        background = {"ok": False, "warnings": [], "error": f"{type(exc).__name__}"}
    return {
        "ok": all(c["ok"] for c in checks.values()),
        "degraded": degraded or not background["ok"],
        "checks": checks,
        "background": background,
    }
