"""Bot leases in Redis: which runner polls which bot, for one command a bot at most.

A runner announces itself with ONE key, ``telegram:runner:<holder>`` (``SET … PX``
the lease TTL), renewed every TTL/3. A bot's lease, ``telegram:lease:<bot>``, holds the
holder's name and stays valid exactly as long as that runner key lives: renewing a
runner's leases is one ``SET`` of its own key and one ``MGET`` of its bots' leases
(to notice a lease taken over), whatever the number of bots, instead of a script per
bot. Only a lease that names this runner, no one, or a runner whose key has expired
can be taken (checked atomically in Lua), so a runner that stalled past its TTL finds
its bots taken over at its next renewal and stops polling them. Only the holder
releases a lease. Runners also heartbeat into a sorted set so each can tell how many
are alive and take only its share of the bots.

A lease key itself expires after ``LEASE_KEY_TTL`` (only so a deleted bot's lease
does not stay forever); a holder that finds its own lease gone simply takes it again.
"""

from __future__ import annotations

import time

from botplatform import cache as keys

LEASE_KEY_TTL_MS = 24 * 3600 * 1000

# KEYS[1]: the lease. ARGV: holder, lease key TTL (ms), the runner key prefix. The
# current holder's runner key is named from the lease's value (one standalone Redis).
_ACQUIRE_LUA = """
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] or redis.call('EXISTS', ARGV[3] .. v) == 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
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


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def lease_acquire(*, bot_id: int, holder: str, ttl_ms: int) -> bool:
    """Take the bot's lease if it is free, ours, or its holder's runner key expired.

    The caller's own runner key must be alive (:func:`leases_renew` sets it first),
    or another runner may take the lease at once.
    """
    key = keys.telegram_lease_key(bot_id)
    client = keys.redis_client()
    if client is None:
        if _local.get(key) not in (None, holder):
            return False
        _local.values[key] = (holder, time.monotonic() + ttl_ms / 1000)
        return True
    prefix = keys.telegram_runner_key("")
    return bool(client.eval(_ACQUIRE_LUA, 1, key, holder, LEASE_KEY_TTL_MS, prefix))


def leases_renew(*, holder: str, bot_ids: list[int], ttl_ms: int) -> dict[int, bool]:
    """Keep this runner alive and say which of ``bot_ids`` it still holds.

    One round trip of two commands (``SET`` of the runner key, ``MGET`` of the leases);
    a lease found empty (Redis restarted, or the key's own TTL) is taken again.
    """
    client = keys.redis_client()
    if client is None:
        held = {}
        for bot_id in bot_ids:
            key = keys.telegram_lease_key(bot_id)
            held[bot_id] = _local.get(key) in (None, holder)
            if held[bot_id]:
                _local.values[key] = (holder, time.monotonic() + ttl_ms / 1000)
        return held
    pipe = client.pipeline(transaction=False)
    pipe.set(keys.telegram_runner_key(holder), 1, px=ttl_ms)
    if bot_ids:
        pipe.mget([keys.telegram_lease_key(bot_id) for bot_id in bot_ids])
    replies = pipe.execute()
    values = replies[1] if bot_ids else []
    held = {}
    for bot_id, value in zip(bot_ids, values, strict=True):
        value = _text(value)
        if value is None:
            held[bot_id] = lease_acquire(bot_id=bot_id, holder=holder, ttl_ms=ttl_ms)
        else:
            held[bot_id] = value == holder
    return held


def lease_release(*, bot_id: int, holder: str) -> None:
    key = keys.telegram_lease_key(bot_id)
    client = keys.redis_client()
    if client is None:
        if _local.get(key) == holder:
            _local.values.pop(key, None)
        return
    client.eval(_RELEASE_LUA, 1, key, holder)


def lease_holder(*, bot_id: int) -> str | None:
    """The runner polling the bot now (its lease, if its runner key is alive), or None."""
    key = keys.telegram_lease_key(bot_id)
    client = keys.redis_client()
    if client is None:
        return _local.get(key)
    holder = _text(client.get(key))
    if holder is None or not client.exists(keys.telegram_runner_key(holder)):
        return None
    return holder


def runners_alive(*, holder: str, ttl_ms: int) -> int:
    """Heartbeat this runner and count the runners seen within one lease TTL.

    Three commands, no transaction: the count only sizes each runner's share.
    """
    client = keys.redis_client()
    if client is None:
        return 1
    key = keys.telegram_runners_key()
    now_ms = int(time.time() * 1000)
    pipe = client.pipeline(transaction=False)
    pipe.zadd(key, {holder: now_ms})
    pipe.zremrangebyscore(key, "-inf", now_ms - ttl_ms)
    pipe.zcard(key)
    return max(int(pipe.execute()[2]), 1)


def runner_leave(*, holder: str) -> None:
    """A clean stop: off the runners' set, and every lease it still names is free."""
    client = keys.redis_client()
    if client is not None:
        pipe = client.pipeline(transaction=False)
        pipe.zrem(keys.telegram_runners_key(), holder)
        pipe.delete(keys.telegram_runner_key(holder))
        pipe.execute()
