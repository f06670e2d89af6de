"""The hot path's direct Redis reads and the metrics flush defer to the cache
fallback's circuit breaker (botplatform/cache_backend.py)."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from botplatform import metrics
from tests.users.helpers import redis_round_trips
from users.selectors import user_state_read

pytestmark = pytest.mark.django_db


@pytest.fixture
def breaker_open():
    breaker = cache.breaker
    breaker.available = False
    breaker.retry_at = float("inf")  # no probe during the test
    yield breaker
    breaker.reset()


def test_state_read_uses_the_fallback_while_the_breaker_is_open(
    bot_user, breaker_open, monkeypatch
):
    with redis_round_trips(monkeypatch) as trips:
        values = user_state_read(user_id=bot_user.pk, project_id=bot_user.project_id, extra_keys=[])
    assert values == {}
    assert trips.count == 0


def test_metrics_keep_their_counts_while_redis_is_down(client, settings, breaker_open):
    settings.METRICS_TOKEN = "t0ken"
    metrics.inc("bp_lock_contention_total", lock="outage")
    assert metrics.flush() is False  # kept in memory, nothing sent to a dead Redis
    body = client.get("/metrics", HTTP_AUTHORIZATION="Bearer t0ken").content.decode()
    assert "\nbp_cache_backend_up 0.0\n" in body
    assert 'bp_lock_contention_total{lock="outage"} 1.0' in body  # this process's own
    breaker_open.reset()
    assert metrics.flush() is True
    assert metrics.counters_read()['bp_lock_contention_total{lock="outage"}'] >= 1
