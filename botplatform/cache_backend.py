"""django-redis with an in-process fallback: the cache keeps answering when Redis dies.

Every operation goes to Redis unless its server's circuit breaker
(:mod:`botplatform.breaker`) is open; a Redis failure (or an open breaker) sends the
operation to a per-process memory cache instead, and Redis is used again as soon as a
probe succeeds, without a restart.

Two rules keep the fallback *correct*, not only available:

- Keys that another process may change behind our back (a user's cached state, the
  engine's ``workflow:waiting:*`` entries; see ``cache.CACHE_SHARED_PREFIXES``) are
  never kept in process memory: while Redis is away they read as misses and writes to
  them are dropped, so every reader goes to the database, which is the truth. A
  "nothing waits" remembered by one process can therefore never hide a wait another
  process created.
- When Redis comes back, the entries it holds may predate writes made during the
  outage (whose invalidations could not reach it). Before this process reads from
  Redis again it deletes those families (``cache.CACHE_RECOVERY_FLUSH_PATTERNS``).
"""

from __future__ import annotations

import logging
from typing import Any

import redis.exceptions
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.locmem import LocMemCache
from django_redis.cache import RedisCache
from django_redis.exceptions import ConnectionInterrupted

from botplatform import cache as keys
from botplatform.breaker import CircuitBreaker, breaker_for

logger = logging.getLogger("botplatform.cache_backend")

REDIS_DOWN = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionInterrupted,
    OSError,
)


def _server_name(location: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(location.split(",")[0])
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


class ResilientRedisCache(RedisCache):
    """``RedisCache`` that falls back to process memory while Redis is unreachable."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self.breaker: CircuitBreaker = breaker_for(_server_name(str(server)))
        self.fallback = LocMemCache(f"redis-fallback:{self.breaker.name}", {})

    # --- plumbing ----------------------------------------------------------------------

    @staticmethod
    def _shared(key: Any) -> bool:
        return isinstance(key, str) and key.startswith(keys.CACHE_SHARED_PREFIXES)

    def _recover(self) -> None:
        """After an outage, drop what may be stale in Redis before reading it again."""
        if not self.breaker.flush_pending:
            return
        with self.breaker.flush_lock:
            if not self.breaker.flush_pending:
                return
            deleted = 0
            client = self.client.get_client(write=True)
            for pattern in keys.CACHE_RECOVERY_FLUSH_PATTERNS:
                batch: list = []
                for key in client.scan_iter(match=pattern, count=1000):
                    batch.append(key)
                    if len(batch) >= 500:
                        deleted += client.unlink(*batch)
                        batch = []
                if batch:
                    deleted += client.unlink(*batch)
            self.fallback.clear()
            self.breaker.flush_pending = False
        logger.warning(
            "Redis %s: dropped %s possibly stale cached entries", self.breaker.name, deleted
        )

    def _run(self, name: str, args: tuple, kwargs: dict, fallback):
        if kwargs.get("client") is not None:  # a caller's pipeline: nothing is sent here
            return getattr(super(), name)(*args, **kwargs)
        if not self.breaker.rejecting():
            try:
                if not self.breaker.available:
                    # Probe with a PING, not with this operation: a read that happened
                    # to be the probe would return pre-outage data before the flush.
                    self.client.get_client(write=True).ping()
                self._recover()
                return getattr(super(), name)(*args, **kwargs)
            except REDIS_DOWN:
                pass
        return fallback()

    # --- the cache API -----------------------------------------------------------------

    def get(self, key, default=None, version=None, client=None):
        def fallback():
            return default if self._shared(key) else self.fallback.get(key, default, version)

        return self._run("get", (key, default, version), {"client": client}, fallback)

    def get_many(self, keys_, version=None, client=None):
        def fallback():
            wanted = [k for k in keys_ if not self._shared(k)]
            return self.fallback.get_many(wanted, version) if wanted else {}

        return self._run("get_many", (keys_,), {"version": version, "client": client}, fallback)

    def has_key(self, key, version=None, client=None):
        def fallback():
            return False if self._shared(key) else self.fallback.has_key(key, version)

        return self._run("has_key", (key,), {"version": version, "client": client}, fallback)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None, client=None, **kwargs):
        def fallback():
            if self._shared(key):
                return False
            self.fallback.set(key, value, timeout, version)
            return True

        kwargs.update(timeout=timeout, version=version, client=client)
        return self._run("set", (key, value), kwargs, fallback)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None, client=None):
        def fallback():
            if self._shared(key):
                return False
            return self.fallback.add(key, value, timeout, version)

        kwargs = {"timeout": timeout, "version": version, "client": client}
        return self._run("add", (key, value), kwargs, fallback)

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None, client=None, **kwargs):
        def fallback():
            local = {k: v for k, v in data.items() if not self._shared(k)}
            self.fallback.set_many(local, timeout, version)
            return []

        kwargs.update(timeout=timeout, version=version, client=client)
        return self._run("set_many", (data,), kwargs, fallback)

    def delete(self, key, version=None, prefix=None, client=None):
        def fallback():
            return self.fallback.delete(key, version)

        kwargs = {"version": version, "prefix": prefix, "client": client}
        return self._run("delete", (key,), kwargs, fallback)

    def delete_many(self, keys_, version=None, client=None):
        def fallback():
            self.fallback.delete_many(list(keys_), version)

        return self._run("delete_many", (keys_,), {"version": version, "client": client}, fallback)

    def incr(self, key, delta=1, version=None, client=None, **kwargs):
        def fallback():
            if self._shared(key):
                raise ValueError(f"Key '{key}' not found")
            return self.fallback.incr(key, delta, version)

        kwargs.update(delta=delta, version=version, client=client)
        return self._run("incr", (key,), kwargs, fallback)

    def decr(self, key, delta=1, version=None, client=None, **kwargs):
        return self.incr(key, -delta, version=version, client=client, **kwargs)

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None, client=None):
        def fallback():
            return False if self._shared(key) else self.fallback.touch(key, timeout, version)

        kwargs = {"timeout": timeout, "version": version, "client": client}
        return self._run("touch", (key,), kwargs, fallback)

    def clear(self):
        self.fallback.clear()
        return self._run("clear", (), {}, lambda: None)

    # --- status ---------------------------------------------------------------------

    def status(self) -> dict:
        return {"backend": "RedisCache", "server": self.breaker.name, **self.breaker.status()}


def cache_status() -> dict:
    """{"redis_available": bool, "since": iso time, ...} of the default cache.

    ``redis_available`` is always true for a cache that is not Redis (nothing to lose).
    Read by ``/healthz`` and the metrics endpoint; costs no network round trip.
    """
    from django.core.cache import caches

    backend = caches["default"]
    if isinstance(backend, ResilientRedisCache):
        return backend.status()
    return {"backend": type(backend).__name__, "redis_available": True, "since": None}


class ProcessLocMemCache(LocMemCache):
    """The embedded default's cache (no REDIS_URL): process memory, minus shared keys.

    Without Redis every process (``runserver``, ``runbot``) has its own memory, so a
    write in one cannot invalidate another's copy: an operator's balance adjustment
    or cancelled conversation would stay invisible to the bot runner until the TTL.
    The families another process may change (``cache.CACHE_PROCESS_LOCAL_SKIP_PREFIXES``)
    are therefore never kept, as during a Redis outage: they read as misses and the
    database answers.
    """

    @staticmethod
    def _shared(key: Any) -> bool:
        return isinstance(key, str) and key.startswith(keys.CACHE_PROCESS_LOCAL_SKIP_PREFIXES)

    def get(self, key, default=None, version=None):
        return default if self._shared(key) else super().get(key, default, version)

    def has_key(self, key, version=None):
        return False if self._shared(key) else super().has_key(key, version)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        if not self._shared(key):
            super().set(key, value, timeout, version)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return False if self._shared(key) else super().add(key, value, timeout, version)

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        return False if self._shared(key) else super().touch(key, timeout, version)

    def incr(self, key, delta=1, version=None):
        if self._shared(key):
            raise ValueError(f"Key '{key}' not found")
        return super().incr(key, delta, version)
