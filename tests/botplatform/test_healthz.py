from __future__ import annotations

import pytest
from django.test import override_settings

from botplatform.env import cache_config
from botplatform.models import Heartbeat


@pytest.fixture(autouse=True)
def _scheduler_ran(db):
    """The periodic scheduler has just run (its absence is tested apart)."""
    from django.utils import timezone

    Heartbeat.objects.create(name="scheduler", at=timezone.now())


def test_healthz_reports_every_dependency(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert body["checks"]["database"] == {
        "ok": True,
        "ms": body["checks"]["database"]["ms"],
        "backend": "postgresql",
    }
    assert body["checks"]["cache"]["backend"] == "RedisCache"
    assert set(body["checks"]) == {"database", "cache", "broker"}
    cache = body["checks"]["cache"]
    assert (cache["kind"], cache["redis_available"], cache["redis"]) == ("redis", True, "up")
    assert body["degraded"] is False


def test_healthz_without_redis_says_so_and_is_not_degraded(client, db):
    """The embedded default (no REDIS_URL) is a valid setup, not a Redis outage."""
    with override_settings(CACHES={"default": cache_config("")}):
        response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True and body["degraded"] is False
    cache = body["checks"]["cache"]
    assert cache["ok"] is True and cache["kind"] == "in-process"
    assert cache["redis_available"] is None and cache["redis"] == "not configured"
    assert cache["backend"] == "in-process memory (no REDIS_URL)"
    assert cache["since"] is None


@override_settings(CELERY_TASK_ALWAYS_EAGER=False, CELERY_BROKER_URL="redis://127.0.0.1:1/0")
def test_healthz_answers_503_when_the_broker_is_unreachable(client, db):
    from botplatform.celery import app

    app.conf.broker_url = "redis://127.0.0.1:1/0"
    try:
        response = client.get("/healthz")
    finally:
        app.conf.broker_url = "memory://"
    assert response.status_code == 503
    body = response.json()
    assert body["ok"] is False
    assert body["checks"]["broker"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True
