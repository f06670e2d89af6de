"""Redis killed or hung under the cache, locks and rate limits: they keep working,
without paying a timeout per call, and go back to Redis by themselves."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.cache import cache

from botplatform import cache as keys
from botplatform import ratelimit
from botplatform.cache_backend import cache_status
from botplatform.locks import LockNotAcquired, redis_lock
from tests.resilience.conftest import BREAKER_SECONDS


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def back_on_redis() -> bool:
    cache.get("probe")  # any cache call probes once the breaker interval is over
    return cache_status()["redis_available"]


def breaker():
    from django.core.cache import caches

    return caches["default"].breaker


def test_cache_falls_back_to_memory_on_sigkill_and_returns_to_redis(
    resilient_cache, breaker_log, client, db
):
    raw = resilient_cache.client()
    cache.set("plain", 1)
    assert raw.exists("plain") == 1 and cache.get("plain") == 1

    resilient_cache.kill()
    cache.set("plain", 2)  # the first failure opens the breaker
    assert cache.get("plain") == 2  # served from process memory
    assert cache.add("once", 1) is True and cache.add("once", 1) is False
    status = cache_status()
    assert status["redis_available"] is False and status["since"]
    # Keys another process may change are never answered from this process's memory.
    waiting = keys.workflow_waiting_key("1:42")
    cache.set(waiting, 0)
    assert cache.get(waiting) is None
    assert cache.get_many([waiting, "plain"]) == {"plain": 2}

    from django.utils import timezone

    from botplatform.models import Heartbeat

    Heartbeat.objects.create(name="scheduler", at=timezone.now())  # only Redis is down
    body = client.get("/healthz").json()
    assert body["ok"] is True and body["degraded"] is True
    assert body["checks"]["cache"]["redis_available"] is False
    assert body["checks"]["cache"]["kind"] == "redis"
    assert body["checks"]["cache"]["redis"] == "unreachable"
    assert "fallback" in body["checks"]["cache"]["backend"]

    resilient_cache.start()  # empty, on the same port
    assert wait_until(back_on_redis), cache_status()
    cache.set("plain", 3)
    assert raw.exists("plain") == 1 and cache.get("plain") == 3
    body = client.get("/healthz").json()
    assert body["degraded"] is False and body["checks"]["cache"]["backend"] == "RedisCache"
    # Logged once each way, however many calls went to the fallback.
    assert len(breaker_log("unreachable")) == 1
    assert len(breaker_log("answers again")) == 1


def test_a_hung_redis_costs_one_timeout_then_every_user_skips_it(resilient_cache, db):
    """SIGSTOP: sockets hang until SOCKET_TIMEOUT. Cache, locks and rate limits share
    one breaker, so only the first call waits; the rest never touch the socket."""
    cache.set("warm", 1)
    resilient_cache.pause()
    try:
        assert cache.get("warm") is None  # the one call that pays the timeout
        failures = breaker().failures
        assert failures == 1
        started = time.monotonic()
        for n in range(20):
            assert cache.get("warm") is None
            with redis_lock("user", f"{n}:spend"):  # PostgreSQL advisory lock instead
                pass
            assert ratelimit.rate_hit([(f"rate_limit:t:{n}:1s", 5, 1000)]) == 0
        elapsed = time.monotonic() - started
        if elapsed < BREAKER_SECONDS:  # still inside one open interval: nothing probed
            assert breaker().failures == failures
        assert breaker().failures <= failures + int(elapsed / BREAKER_SECONDS) + 1
    finally:
        resilient_cache.resume()
    assert wait_until(back_on_redis)


@pytest.mark.django_db(transaction=True)
def test_locks_fall_back_to_advisory_locks_when_redis_is_killed(resilient_cache):
    resilient_cache.kill()
    holding, release = threading.Event(), threading.Event()

    def holder():
        from django.db import connection

        try:
            with redis_lock("user", "7:spend"):
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    assert holding.wait(10)
    try:
        with pytest.raises(LockNotAcquired), redis_lock("user", "7:spend"):
            pass
    finally:
        release.set()
        thread.join(10)
    with redis_lock("user", "7:spend"):
        pass
    resilient_cache.start()
    assert wait_until(back_on_redis)
    with redis_lock("user", "7:spend"):
        assert resilient_cache.client().exists("lock:user:7:spend") == 1


def test_rate_limits_fall_back_to_process_counters_and_return(resilient_cache, db):
    resilient_cache.kill()
    verdicts = [ratelimit.incoming_check(project_id=1, telegram_id=5, limit=3) for _ in range(5)]
    assert verdicts == ["ok", "ok", "ok", "notify", "ignore"]
    # The batch path's pipelined check falls back the same way.
    assert ratelimit.incoming_check_many([(1, 8, 2)] * 3) == ["ok", "ok", "notify"]
    resilient_cache.start()
    assert wait_until(back_on_redis)
    assert ratelimit.incoming_check(project_id=1, telegram_id=6, limit=3) == "ok"
    assert resilient_cache.client().exists(keys.rate_limit_user_key(1, 6)) == 1
