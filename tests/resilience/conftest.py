from __future__ import annotations

import logging

import pytest

from botplatform.breaker import breakers_reset
from botplatform.env import cache_config
from tests.resilience.servers import RedisServer

# The breaker's open interval in these tests (REDIS_BREAKER_SECONDS), seconds.
BREAKER_SECONDS = 0.5


@pytest.fixture
def redis_server():
    """A redis-server of this test's own, on a free port; gone afterwards."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def resilient_cache(settings, redis_server):
    """The default cache (and every raw Redis user) pointed at ``redis_server``."""
    breakers_reset()
    settings.REDIS_BREAKER_SECONDS = BREAKER_SECONDS
    settings.CACHES = {"default": cache_config(redis_server.url)}
    yield redis_server
    breakers_reset()


@pytest.fixture
def breaker_log(caplog):
    caplog.set_level(logging.INFO, logger="botplatform.breaker")
    caplog.set_level(logging.INFO, logger="botplatform.cache_backend")

    def lines(word: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if word in r.getMessage()]

    return lines
