"""The Redis lock: one holder at a time, expiry, token-checked release, Redis down."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from django.db import connection
from django_redis import get_redis_connection

from botplatform import locks
from botplatform.locks import LockNotAcquired, lock_acquire, lock_release, redis_lock


def test_the_lock_key_is_named_by_the_cache_module_and_expires_in_ten_seconds():
    raw = get_redis_connection("default")
    with redis_lock("user", "7:spend"):
        assert raw.exists("lock:user:7:spend") == 1
        assert 9000 < raw.pttl("lock:user:7:spend") <= 10000
    assert raw.exists("lock:user:7:spend") == 0


def test_second_holder_is_refused_until_release():
    with redis_lock("user", "1:spend"):
        with pytest.raises(LockNotAcquired) as caught, redis_lock("user", "1:spend"):
            pass
        assert caught.value.key == "lock:user:1:spend"
        # A different resource id is independent.
        with redis_lock("user", "2:spend"):
            pass
    with redis_lock("user", "1:spend"):
        pass


def test_lock_is_released_when_the_block_raises():
    with pytest.raises(RuntimeError), redis_lock("job", 1):
        raise RuntimeError("boom")
    assert get_redis_connection("default").exists("lock:job:1") == 0


def test_only_one_of_many_concurrent_holders_gets_the_lock():
    start = threading.Barrier(20)
    inside = []
    refused = []
    overlap = []
    active = threading.Lock()

    def contend(n):
        start.wait()
        try:
            with redis_lock("race", "x"):
                if not active.acquire(blocking=False):
                    overlap.append(n)
                inside.append(n)
                time.sleep(0.05)
                active.release()
        except LockNotAcquired:
            refused.append(n)

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlap == []
    assert len(inside) >= 1
    assert len(inside) + len(refused) == 20


def test_expired_lock_cannot_be_released_by_its_former_holder():
    raw = get_redis_connection("default")
    old_token = lock_acquire("lock:t:1", ttl=0.05)
    assert old_token is not None
    time.sleep(0.1)
    new_token = lock_acquire("lock:t:1", ttl=5)
    assert new_token is not None and new_token != old_token
    assert lock_release("lock:t:1", old_token) is False
    assert raw.get("lock:t:1").decode() == new_token
    assert lock_release("lock:t:1", new_token) is True
    assert raw.exists("lock:t:1") == 0


def test_holder_outliving_ttl_does_not_release_the_next_holder():
    raw = get_redis_connection("default")
    with redis_lock("slow", 1, ttl=0.05):
        time.sleep(0.1)
        token = lock_acquire("lock:slow:1", ttl=5)
        assert token is not None
    # The first block ended and tried to release: the second holder's lock survives.
    assert raw.get("lock:slow:1").decode() == token


def test_non_positive_ttl_is_rejected():
    with pytest.raises(ValueError, match="positive"):
        lock_acquire("lock:x:1", ttl=0)


@pytest.fixture
def redis_down(monkeypatch):
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    monkeypatch.setattr(locks, "_redis", lambda: dead)


def test_redis_unreachable_falls_back_to_an_advisory_lock(db, redis_down, caplog):
    caplog.set_level("DEBUG", logger="botplatform.locks")  # the breaker warns once, not this
    ran = []
    with redis_lock("user", "3:spend"):
        ran.append(True)
    assert ran == [True]
    assert "PostgreSQL advisory lock" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_advisory_fallback_admits_one_holder_at_a_time(redis_down):
    holding = threading.Event()
    finish = threading.Event()

    def holder():
        try:
            with redis_lock("user", "4:spend"):
                holding.set()
                finish.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    assert holding.wait(10)
    try:
        with pytest.raises(LockNotAcquired), redis_lock("user", "4:spend"):
            pass
        with redis_lock("user", "5:spend"):  # another key is free
            pass
    finally:
        finish.set()
        thread.join(10)
    with redis_lock("user", "4:spend"):  # released by its holder
        pass
    # Released on error too, and the session holds nothing afterwards.
    with pytest.raises(RuntimeError), redis_lock("user", "4:spend"):
        raise RuntimeError("boom")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        )
        assert cursor.fetchone()[0] == 0


def test_advisory_lock_ids_are_stable_and_distinct():
    assert locks.advisory_lock_id("lock:user:1:spend") == locks.advisory_lock_id(
        "lock:user:1:spend"
    )
    assert locks.advisory_lock_id("lock:user:1:spend") != locks.advisory_lock_id(
        "lock:user:2:spend"
    )
    assert -(2**63) <= locks.advisory_lock_id("x") < 2**63
