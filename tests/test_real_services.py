"""The suite runs against the real services, never the embedded fallbacks."""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django_redis import get_redis_connection


def test_database_is_postgresql(db):
    assert connection.vendor == "postgresql"


def test_cache_is_redis_and_keys_are_stored_as_named():
    assert settings.CACHES["default"]["BACKEND"] == "botplatform.cache_backend.ResilientRedisCache"
    cache.set("user:1:2:variables", {"balance": 5}, timeout=30)
    raw = get_redis_connection("default")
    assert raw.exists("user:1:2:variables") == 1
    assert 0 < raw.ttl("user:1:2:variables") <= 30
