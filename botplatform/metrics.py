"""Counters, a latency histogram and per-project minute series, across processes.

The hot path only touches process memory (a dict under a lock). Every
``METRICS_FLUSH_INTERVAL`` seconds the next recorded event (in any process: runner,
web, Celery) flushes the deltas to Redis
in ONE pipeline (``HINCRBYFLOAT`` into ``metrics:counters`` and per project and minute
hashes), so runners, web and Celery processes add up without a Redis round trip per
message. ``/metrics`` is rendered by ``prometheus_client`` from a custom collector over
the Redis totals (plus gauges read at scrape time, some registered by the apps); the
project dashboard reads the minute series. If Redis is down the deltas stay in memory
and go out with a later flush.
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)

from botplatform import cache as keys

logger = logging.getLogger(__name__)

# Upper bounds (seconds) of the processing-latency histogram.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# The counters processes add to in Redis (name -> HELP text). Declared here so that a
# scrape lists every family, also before its first event.
COUNTERS = {
    "bp_updates_processed_total": "Telegram updates processed, by outcome.",
    "bp_cache_requests_total": "Cache lookups by key family and result.",
    "bp_rate_limited_total": "Incoming updates refused by the user rate limit.",
    "bp_lock_contention_total": "Attempts that found a lock already taken.",
    "bp_sends_total": "Bot API calls that succeeded, by kind.",
    "bp_send_failures_total": "Bot API calls that failed, by reason.",
}
LATENCY_HISTOGRAM = "bp_update_processing_seconds"
LATENCY_HELP = (
    "Time from claiming an update to its replies being handed to Telegram, "
    "without the Bot API's own network time."
)

_lock = threading.Lock()
_counters: Counter[str] = Counter()
_series: Counter[tuple[int, int, str]] = Counter()  # (project, minute, field) -> delta
_local = threading.local()
_next_flush = 0.0
# Per-minute series keys this process has already given their TTL (see flush).
_expiring: set[str] = set()
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
                sample = _sample(f"{LATENCY_HISTOGRAM}_bucket", {"le": str(bound)})
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
        # A minute's key gets its TTL once per process, not once per flush: the
        # process writes it only during that minute (plus a late flush or two). Left
        # over: Redis restarting empty within the minute, unseen by this process (no
        # failed flush), keeps that one minute's small hash without a TTL.
        fresh = touched - _expiring
        for series_key in fresh:
            pipe.expire(series_key, keys.METRICS_SERIES_TTL)
        pipe.execute()
        if len(_expiring) > 10_000:
            _expiring.clear()
        _expiring.update(fresh)
        return True
    except Exception as exc:  # Redis down or no django-redis: keep the deltas
        logger.debug("metrics flush failed, kept for later: %s", exc)
        _expiring.clear()  # Redis may come back empty: set the TTLs again
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


# --- Prometheus exposition ---------------------------------------------------------


@dataclass(frozen=True)
class Gauge:
    """A figure computed at scrape time: ``read`` maps label values to a number."""

    name: str
    documentation: str
    labels: tuple[str, ...]
    read: Callable[[], Mapping[tuple[str, ...], float]]


_gauges: dict[str, Gauge] = {}


def gauge_register(
    name: str,
    *,
    documentation: str,
    read: Callable[[], Mapping[tuple[str, ...], float]],
    labels: tuple[str, ...] = (),
) -> None:
    """Add a scrape-time gauge to ``/metrics`` (idempotent by name).

    Infrastructure imports no application: an app that has figures of its own (the
    workflows app's execution counts) registers them from its ``AppConfig.ready()``.
    ``read`` returns ``{(label values...): value}``; an empty mapping leaves the gauge's
    samples out.
    """
    _gauges[name] = Gauge(name, documentation, labels, read)


gauge_register(
    "bp_celery_queue_depth",
    documentation="Tasks waiting in the Celery broker queue.",
    read=lambda: {(): _celery_queue_depth()},
)
gauge_register(
    "bp_cache_backend_up",
    documentation="1 when the cache backend uses Redis, 0 on fallback.",
    read=lambda: {} if (up := cache_backend_up()) is None else {(): up},
)

_FIELD = re.compile(r"^(?P<name>[^{]+)(?:\{(?P<labels>.*)\})?$", re.DOTALL)
_LABEL = re.compile(r'(\w+)="([^"]*)"')  # inc() strips quotes from values


def _field_parse(field: str) -> tuple[str, dict[str, str]]:
    """``'name{k="v"}'`` (the Redis hash field ``_sample`` wrote) -> (name, labels)."""
    match = _FIELD.match(field)
    if match is None:
        return field, {}
    return match["name"], dict(_LABEL.findall(match["labels"] or ""))


def _latency_family(samples: list[tuple[str, dict[str, str], float]]) -> Metric:
    """The histogram with every declared bucket (cumulative counts; 0 when empty)."""
    buckets = {str(bound): 0.0 for bound in LATENCY_BUCKETS} | {"+Inf": 0.0}
    total = 0.0
    for name, labels, value in samples:
        if name == f"{LATENCY_HISTOGRAM}_bucket" and "le" in labels:
            buckets[labels["le"]] = value
        elif name == f"{LATENCY_HISTOGRAM}_sum":
            total = value
    ordered = sorted(buckets.items(), key=lambda item: float(item[0]))
    return HistogramMetricFamily(LATENCY_HISTOGRAM, LATENCY_HELP, buckets=ordered, sum_value=total)


class RedisAggregatesCollector:
    """A ``prometheus_client`` collector over the counters every process flushed to
    Redis, plus the registered gauges; it reads them afresh on every scrape."""

    def collect(self) -> Iterator[Metric]:
        by_family: dict[str, list[tuple[str, dict[str, str], float]]] = {}
        for field, value in counters_read().items():
            name, labels = _field_parse(field)
            family = name
            if name.startswith(f"{LATENCY_HISTOGRAM}_"):
                family = LATENCY_HISTOGRAM
            by_family.setdefault(family, []).append((name, labels, value))
        for name, documentation in COUNTERS.items():
            counter = CounterMetricFamily(name, documentation)
            for sample, labels, value in by_family.pop(name, []):
                counter.add_sample(sample, labels, value)
            yield counter
        yield _latency_family(by_family.pop(LATENCY_HISTOGRAM, []))
        for name, samples in sorted(by_family.items()):  # counted but not declared above
            unknown = UnknownMetricFamily(name, "")
            for sample, labels, value in samples:
                unknown.add_sample(sample, labels, value)
            yield unknown
        for gauge in list(_gauges.values()):
            yield from _gauge_family(gauge)


def _gauge_family(gauge: Gauge) -> Iterator[Metric]:
    try:
        values = gauge.read()
    except Exception as exc:  # one broken figure (the database down) must not hide the rest
        logger.warning("metrics: gauge %s left out, unreadable: %s", gauge.name, exc)
        return
    family = GaugeMetricFamily(gauge.name, gauge.documentation, labels=gauge.labels)
    for label_values, value in sorted(values.items()):
        family.add_metric(list(label_values), value)
    yield family


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(RedisAggregatesCollector())


def prometheus_render() -> str:
    """The Prometheus text exposition (format 0.0.4) of every counter and gauge."""
    return generate_latest(REGISTRY).decode()
