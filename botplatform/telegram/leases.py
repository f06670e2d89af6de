"""Per-bot leases in Redis: which runner polls which bot.

A lease is a key holding the runner's random token with a TTL. Only the holder can
renew or release it (checked atomically in Lua), so a runner that stalled past its
TTL cannot extend or delete a lease another runner has taken over in the meantime.
Runners also heartbeat into a sorted set so each can tell how many are alive and
take only its share of the bots.
"""

from __future__ import annotations

import time

from botplatform import cache as keys

_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class _Local:
    """In-process stand-in when the cache is not Redis (the embedded default)."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[str, float]] = {}

    def get(self, key: str) -> str | None:
        value = self.values.get(key)
        if value is None or value[1] < time.monotonic():
            return None
        return value[0]


_local = _Local()


def lease_acquire(*, bot_id: int, holder: str, ttl_ms: int) -> bool:
    key = keys.telegram_lease_key(bot_id)
    client = keys.redis_client()
    if client is None:
        if _local.get(key) not in (None, holder):
            return False
        _local.values[key] = (holder, time.monotonic() + ttl_ms / 1000)
        return True
    return bool(client.set(key, holder, nx=True, px=ttl_ms)) or lease_renew(
        bot_id=bot_id, holder=holder, ttl_ms=ttl_ms
    )


def lease_renew(*, bot_id: int, holder: str, ttl_ms: int) -> bool:
    key = keys.telegram_lease_key(bot_id)
    client = keys.redis_client()
    if client is None:
        if _local.get(key) != holder:
            return False
        _local.values[key] = (holder, time.monotonic() + ttl_ms / 1000)
        return True
    return bool(client.eval(_RENEW_LUA, 1, key, holder, ttl_ms))


def lease_release(*, bot_id: int, holder: str) -> None:
    key = keys.telegram_lease_key(bot_id)
    client = keys.redis_client()
    if client is None:
        if _local.get(key) == holder:
            _local.values.pop(key, None)
        return
    client.eval(_RELEASE_LUA, 1, key, holder)


def lease_holder(*, bot_id: int) -> str | None:
    key = keys.telegram_lease_key(bot_id)
    client = keys.redis_client()
    if client is None:
        return _local.get(key)
    value = client.get(key)
    return value.decode() if isinstance(value, bytes) else value


def runners_alive(*, holder: str, ttl_ms: int) -> int:
    """Heartbeat this runner and count the runners seen within one lease TTL."""
    client = keys.redis_client()
    if client is None:
        return 1
    key = keys.telegram_runners_key()
    now_ms = int(time.time() * 1000)
    pipe = client.pipeline()
    pipe.zadd(key, {holder: now_ms})
    pipe.zremrangebyscore(key, "-inf", now_ms - ttl_ms)
    pipe.zcard(key)
    pipe.pexpire(key, ttl_ms * 4)
    return max(int(pipe.execute()[2]), 1)


def runner_leave(*, holder: str) -> None:
    client = keys.redis_client()
    if client is not None:
        client.zrem(keys.telegram_runners_key(), holder)
