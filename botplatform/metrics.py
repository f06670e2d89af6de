"""Counters, a latency histogram and per-project minute series, across processes.

The hot path only touches process memory (a dict under a lock). Every
``METRICS_FLUSH_INTERVAL`` seconds the next recorded event (in any process: runner,
web, Celery) flushes the deltas to Redis
in ONE pipeline (``HINCRBYFLOAT`` into ``metrics:counters`` and per project and minute
hashes), so runners, web and Celery processes add up without a Redis round trip per
message. ``/metrics`` renders the Redis totals in Prometheus text format; the project
dashboard reads the minute series. If Redis is down the deltas stay in memory and go
out with a later flush.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from botplatform import cache as keys

logger = logging.getLogger(__name__)

# Upper bounds (seconds) of the processing-latency histogram.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

HELP = {
    "bp_updates_processed_total": ("counter", "Telegram updates processed, by outcome."),
    "bp_update_processing_seconds": (
        "histogram",
        "Time from claiming an update to its replies being handed to Telegram, "
        "without the Bot API's own network time.",
    ),
    "bp_cache_requests_total": ("counter", "Cache lookups by key family and result."),
    "bp_rate_limited_total": ("counter", "Incoming updates refused by the user rate limit."),
    "bp_lock_contention_total": ("counter", "Attempts that found a lock already taken."),
    "bp_sends_total": ("counter", "Bot API calls that succeeded, by method."),
    "bp_send_failures_total": ("counter", "Bot API calls that failed, by reason."),
    "bp_celery_queue_depth": ("gauge", "Tasks waiting in the Celery broker queue."),
    "bp_executions": ("gauge", "Workflow executions by status (running, waiting)."),
    "bp_cache_backend_up": ("gauge", "1 when the cache backend uses Redis, 0 on fallback."),
}

_lock = threading.Lock()
_counters: Counter[str] = Counter()
_series: Counter[tuple[int, int, str]] = Counter()  # (project, minute, field) -> delta
_local = threading.local()
_next_flush = 0.0
# Totals since the process started (never reset by a flush): the benchmark reads them.
_totals: Counter[str] = Counter()


def _sample(name: str, labels: dict[str, str] | None = None) -> str:
    if not labels:
        return name
    inner = ",".join(f'{k}="{str(v).replace(chr(34), "")}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def inc(name: str, value: float = 1, **labels: str) -> None:
    """Add to a counter (process memory only)."""
    sample = _sample(name, labels)
    with _lock:
        _counters[sample] += value
        _totals[sample] += value
    maybe_flush()  # any process that counts (runner, web, Celery) also flushes


def project_add(project_id: int | None, field: str, value: float = 1) -> None:
    """Add to a project's figure for the current minute (the dashboard's series)."""
    if project_id is None:
        return
    minute = int(time.time() // 60)
    with _lock:
        _series[(project_id, minute, field)] += value


@contextmanager
def project_scope(project_id: int) -> Iterator[None]:
    """Attribute cache lookups made inside (deep in selectors) to this project."""
    previous = getattr(_local, "project_id", None)
    _local.project_id = project_id
    try:
        yield
    finally:
        _local.project_id = previous


def project_current_set(project_id: int | None) -> None:
    """The project this thread is processing an update of (for cache lookups)."""
    _local.project_id = project_id


def project_current_get() -> int | None:
    return getattr(_local, "project_id", None)


def cache_lookup(family: str, *, hit: bool, count: int = 1) -> None:
    """One (or ``count``) cache lookups of a key family: a hit or a miss."""
    inc("bp_cache_requests_total", count, family=family, result="hit" if hit else "miss")
    project_add(getattr(_local, "project_id", None), "cache_hits" if hit else "cache_misses", count)


def latency_observe(seconds: float, *, project_id: int | None) -> None:
    """One processed update's latency into the histogram and the project's series."""
    _local.last_latency = seconds
    with _lock:
        for bound in LATENCY_BUCKETS:
            if seconds <= bound:
                sample = _sample("bp_update_processing_seconds_bucket", {"le": str(bound)})
                _counters[sample] += 1
                _totals[sample] += 1
        for sample, value in (
            ('bp_update_processing_seconds_bucket{le="+Inf"}', 1),
            ("bp_update_processing_seconds_sum", seconds),
            ("bp_update_processing_seconds_count", 1),
        ):
            _counters[sample] += value
            _totals[sample] += value
    project_add(project_id, "latency_ms_sum", seconds * 1000)
    project_add(project_id, "latency_count", 1)
    maybe_flush()


def network_add(seconds: float) -> None:
    """Time this thread spent waiting on the Bot API (kept out of processing latency)."""
    _local.network = getattr(_local, "network", 0.0) + seconds
    _local.network_total = getattr(_local, "network_total", 0.0) + seconds


def network_total() -> float:
    """All the Bot API time of this thread so far (never reset; for intervals)."""
    return getattr(_local, "network_total", 0.0)


def network_take() -> float:
    """The Bot API time accumulated by this thread since the last call; resets it."""
    spent = getattr(_local, "network", 0.0)
    _local.network = 0.0
    return spent


def totals_reset() -> None:
    with _lock:
        _totals.clear()


def last_latency() -> float:
    """The processing latency (s) of the last update this thread ran."""
    return getattr(_local, "last_latency", 0.0)


def totals() -> dict[str, float]:
    """This process's counters since it started (for the benchmark)."""
    with _lock:
        return dict(_totals)


def _redis():
    client = keys.redis_client()
    if client is None:
        raise RuntimeError("metrics are shared through Redis; the cache is not Redis")
    return client


def maybe_flush() -> None:
    """Flush if the interval has passed: called from the hot path, usually a no-op."""
    global _next_flush
    now = time.monotonic()
    if now < _next_flush:
        return
    _next_flush = now + settings.METRICS_FLUSH_INTERVAL
    flush()


@atexit.register
def flush() -> bool:
    """Send the deltas to Redis in one pipeline; on failure keep them for next time.

    Also runs at interpreter exit, so a stopping process hands in its last seconds.
    """
    with _lock:
        counters = dict(_counters)
        series = dict(_series)
        _counters.clear()
        _series.clear()
    if not counters and not series:
        return True
    if cache_backend_up() == 0:  # the cache fallback says Redis is down: keep them
        with _lock:
            _counters.update(counters)
            _series.update(series)
        return False
    try:
        client = _redis()
        pipe = client.pipeline(transaction=False)
        key = keys.metrics_counters_key()
        for sample, value in counters.items():
            pipe.hincrbyfloat(key, sample, value)
        touched = set()
        for (project_id, minute, field), value in series.items():
            series_key = keys.metrics_project_minute_key(project_id, minute)
            pipe.hincrbyfloat(series_key, field, value)
            touched.add(series_key)
        for series_key in touched:
            pipe.expire(series_key, keys.METRICS_SERIES_TTL)
        pipe.execute()
        return True
    except Exception as exc:  # Redis down or no django-redis: keep the deltas
        logger.debug("metrics flush failed, kept for later: %s", exc)
        with _lock:
            _counters.update(counters)
            _series.update(series)
        return False


# --- Reading ------------------------------------------------------------------------


def counters_read() -> dict[str, float]:
    """Every process's flushed counters (plus this process's unflushed ones)."""
    if not flush() and cache_backend_up() == 0:
        return totals()  # Redis is down (the fallback says so): this process only
    try:
        raw = _redis().hgetall(keys.metrics_counters_key())
    except Exception as exc:
        logger.warning("metrics: Redis unreadable (%s); showing this process only", exc)
        return totals()
    return {k.decode(): float(v) for k, v in raw.items()}


def project_series(*, project_id: int, minutes: int = 60) -> list[dict]:
    """One dict per minute of the last ``minutes`` (oldest first), zeros when idle."""
    flush()
    now = int(time.time() // 60)
    wanted = list(range(now - minutes + 1, now + 1))
    try:
        pipe = _redis().pipeline(transaction=False)
        for minute in wanted:
            pipe.hgetall(keys.metrics_project_minute_key(project_id, minute))
        rows = pipe.execute()
    except Exception as exc:
        logger.warning("metrics: Redis unreadable (%s)", exc)
        rows = [{} for _ in wanted]
    series = []
    for minute, row in zip(wanted, rows, strict=True):
        data = {k.decode(): float(v) for k, v in row.items()}
        series.append({"minute": minute, **data})
    return series


def gauges_read() -> dict[str, float]:
    """Gauges computed at scrape time: Celery queue depth, executions, cache backend."""
    gauges: dict[str, float] = {}
    gauges["bp_celery_queue_depth"] = _celery_queue_depth()
    counts = _execution_counts()
    for status in ("running", "waiting"):
        gauges[_sample("bp_executions", {"status": status})] = counts.get(status, 0)
    up = cache_backend_up()
    if up is not None:
        gauges["bp_cache_backend_up"] = up
    return gauges


def _execution_counts() -> dict[str, int]:
    from django.db.models import Count

    from workflows.models import WorkflowExecution

    rows = (
        WorkflowExecution.objects.filter(status__in=["running", "waiting"])
        .values("status")
        .annotate(n=Count("id"))
    )
    return {row["status"]: row["n"] for row in rows}


def _celery_queue_depth() -> float:
    """Length of the default Celery queue on a Redis broker (0 when none is used)."""
    broker = getattr(settings, "CELERY_BROKER_URL", "") or ""
    if not broker.startswith(("redis://", "rediss://")):
        return 0
    try:
        import redis

        queue = getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery") or "celery"
        client = redis.Redis.from_url(broker, socket_timeout=1, socket_connect_timeout=1)
        try:
            return float(client.llen(queue))
        finally:
            client.close()
    except Exception:
        return 0


def cache_backend_up() -> float | None:
    """HOOK for the resilience helper's circuit breaker (botplatform/cache_backend.py).

    Once ``cache_backend.cache_status()`` exists, its state becomes the
    ``bp_cache_backend_up`` gauge (1 = Redis, 0 = in-process fallback); until then,
    None (the gauge is left out).
    """
    try:
        from botplatform.cache_backend import cache_status  # type: ignore[import-not-found]
    except ImportError:
        return None
    status = cache_status()
    if isinstance(status, dict):  # {"redis_available": bool, "since": ..., ...}
        status = status.get("redis_available", status.get("state"))
    if isinstance(status, bool):
        return 1.0 if status else 0.0
    return 1.0 if str(status).lower() in {"closed", "up", "ok", "redis", "healthy"} else 0.0


def prometheus_render() -> str:
    """The Prometheus text exposition of every counter and gauge."""
    values = counters_read()
    values.update(gauges_read())
    by_name: dict[str, list[tuple[str, float]]] = {}
    for sample, value in values.items():
        base = sample.split("{", 1)[0]
        for suffix in ("_bucket", "_sum", "_count"):
            if base.endswith(suffix) and base[: -len(suffix)] in HELP:
                base = base[: -len(suffix)]
        by_name.setdefault(base, []).append((sample, value))
    lines = []
    for name in sorted(set(HELP) | set(by_name)):
        kind, text = HELP.get(name, ("untyped", ""))
        if text:
            lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
        if kind == "histogram" and name not in by_name:
            by_name[name] = [(f'{name}_bucket{{le="+Inf"}}', 0), (f"{name}_count", 0)]
        for sample, value in sorted(by_name.get(name, []), key=_bucket_order):
            number = int(value) if float(value).is_integer() else value
            lines.append(f"{sample} {number}")
    return "\n".join(lines) + "\n"


def _bucket_order(item: tuple[str, float]) -> tuple:
    sample = item[0]
    if 'le="' in sample:
        bound = sample.split('le="', 1)[1].split('"', 1)[0]
        return (0, float("inf") if bound == "+Inf" else float(bound))
    return (1, sample)
