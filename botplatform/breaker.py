"""A circuit breaker per Redis server, shared by every user of that server.

When Redis dies, each command would otherwise pay a connect or socket timeout (up to
``SOCKET_TIMEOUT``) before its caller falls back. The breaker sits in the redis-py
connection class (:class:`BreakerConnection`, configured in ``env.cache_config``), so
the cache backend, locks, rate limits, leases and anything else using
``get_redis_connection`` share it: after one failure the server is skipped for
``REDIS_BREAKER_SECONDS`` (commands fail at once with :class:`CircuitOpen`, a
``redis.ConnectionError``, which every caller already treats as "Redis unreachable"),
then one command is let through as a probe. A successful probe closes the breaker.

The switch is logged once each way. Closing after an outage raises ``flush_pending``:
the cache backend then drops the key families another process may have changed while
this one could not reach Redis, before serving anything from Redis again.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

import redis.exceptions
from redis.connection import Connection

logger = logging.getLogger("botplatform.breaker")

DEFAULT_OPEN_SECONDS = 5.0


class CircuitOpen(redis.exceptions.ConnectionError):
    """Redis failed recently; the command was not sent (no timeout paid)."""


def _open_seconds() -> float:
    try:
        from django.conf import settings

        return float(getattr(settings, "REDIS_BREAKER_SECONDS", DEFAULT_OPEN_SECONDS))
    except Exception:  # settings not configured (a bare redis-py user)
        return DEFAULT_OPEN_SECONDS


class CircuitBreaker:
    """Closed (use Redis) or open (skip it until ``retry_at``, then let one probe pass)."""

    def __init__(self, name: str, *, what: str = "Redis", fallback: str = "") -> None:
        self.name = name
        self.what = what
        self.fallback = fallback or "using the in-process fallbacks"
        self._lock = threading.Lock()
        self.available = True
        self.since = datetime.now(UTC)
        self.retry_at = 0.0
        self.probing = False
        self.probe_started = 0.0
        self.flush_pending = False
        self.flush_lock = threading.Lock()
        self.last_error = ""
        self.failures = 0

    def rejecting(self) -> bool:
        """True while open and not yet due for a probe (no state change)."""
        return not self.available and (self.probing or time.monotonic() < self.retry_at)

    def allow(self) -> bool:
        """May a command go to Redis now? When due, exactly one caller gets to probe."""
        if self.available:
            return True
        with self._lock:
            if self.available:
                return True
            now = time.monotonic()
            if now < self.retry_at:
                return False
            # A probe that never reported back (its caller died) does not block forever.
            if self.probing and now - self.probe_started < max(_open_seconds(), 1.0):
                return False
            self.probing, self.probe_started = True, now
            return True

    def failure(self, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            self.retry_at = time.monotonic() + _open_seconds()
            self.probing = False
            if not self.available:
                return
            self.available = False
            self.since = datetime.now(UTC)
        logger.error(
            "%s %s unreachable (%s): %s; retrying every %ss",
            self.what,
            self.name,
            self.last_error,
            self.fallback,
            _open_seconds(),
        )

    def success(self) -> None:
        if self.available:
            return
        with self._lock:
            if self.available:
                return
            self.available = True
            self.probing = False
            self.flush_pending = True
            self.since = datetime.now(UTC)
        logger.warning("%s %s answers again: back to it", self.what, self.name)

    def reset(self) -> None:
        """Forget the state (tests)."""
        with self._lock:
            self.available, self.probing, self.flush_pending = True, False, False
            self.retry_at, self.failures, self.last_error = 0.0, 0, ""
            self.since = datetime.now(UTC)

    def status(self) -> dict:
        return {
            "redis_available": self.available,
            "since": self.since.isoformat(),
            "failures": self.failures,
            "last_error": self.last_error,
        }


_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(name: str, **kwargs) -> CircuitBreaker:
    """The breaker of one server (a Redis ``host:port``, or ``broker``); one per process."""
    breaker = _breakers.get(name)
    if breaker is None:
        with _breakers_lock:
            breaker = _breakers.setdefault(name, CircuitBreaker(name, **kwargs))
    return breaker


def breakers_reset() -> None:
    for breaker in list(_breakers.values()):
        breaker.reset()


_OUTAGE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class BreakerConnection(Connection):
    """A redis-py TCP connection that consults and feeds its server's breaker."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.breaker = breaker_for(f"{self.host}:{self.port}")
        self.probe = False  # this connection carries the breaker's probe

    def _check(self) -> None:
        if self.breaker.available or self.probe:
            return
        if self.breaker.allow():
            self.probe = True
            return
        if self._sock is not None:
            self.disconnect()
        raise CircuitOpen(f"Redis {self.breaker.name} is skipped for a few seconds")

    def _failed(self, exc: BaseException) -> None:
        self.probe = False
        if not isinstance(exc, CircuitOpen):
            self.breaker.failure(exc)

    def _answered(self) -> None:
        self.probe = False
        self.breaker.success()

    def connect_check_health(self, *args, **kwargs):
        if self._sock is not None:
            return None
        self._check()
        try:
            return super().connect_check_health(*args, **kwargs)
        except _OUTAGE as exc:
            self._failed(exc)
            raise
        except Exception:
            self._answered()  # the server answered (e.g. refused our password)
            raise

    def send_packed_command(self, *args, **kwargs):
        self._check()
        try:
            return super().send_packed_command(*args, **kwargs)
        except _OUTAGE as exc:
            self._failed(exc)
            raise

    def read_response(self, *args, **kwargs):
        try:
            response = super().read_response(*args, **kwargs)
        except _OUTAGE as exc:
            self._failed(exc)
            raise
        except Exception:
            self._answered()  # an error reply is still an answer
            raise
        self._answered()
        return response
