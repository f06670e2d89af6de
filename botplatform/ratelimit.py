"""Rate limits, both directions, as GCRA in Redis: one key and one command per limit.

The generic cell rate algorithm (GCRA, the leaky bucket as a meter) keeps one number
per key, the *theoretical arrival time* (TAT). A limit of ``limit`` events per
``window`` ms admits events one emission interval ``T = window / limit`` apart on
average, with a burst of up to ``limit`` at once: an event at ``now`` is admitted
when ``max(TAT, now) + T - now <= window``, and then moves the TAT there. So:

- a quiet key admits ``limit`` events at once, then one every ``T`` ms (the same
  long-run rate and the same first burst as the sliding-window log this replaced);
- in ANY interval of length ``w`` at most ``limit + w / T`` events pass (a burst and
  what refilled meanwhile; the log admitted at most ``limit`` per ``window``, so a
  window straddling a burst and its refill can now see up to ``2 * limit - 1``);
- a refused event records nothing and learns how long to wait, to the millisecond.

Checking and recording happen in one Lua script (``EVALSHA``; inside: ``TIME``, one
``GET`` and one ``SET … PX`` per key) using Redis's own clock, so every process
(runners, web workers, Celery) shares one limit and two of them can never both take
the last slot. The sliding log cost ``ZREMRANGEBYSCORE``, ``ZCARD``, ``ZADD`` and
``PEXPIRE`` per key and a sorted set of up to ``limit`` members; this is a string.
If Redis is unreachable the limits fall back to in-process TATs (per process, still
bounded) and go back to Redis as soon as it answers again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Literal

from django.core.cache import cache
from redis.exceptions import NoScriptError

from botplatform import cache as keys

logger = logging.getLogger(__name__)

# KEYS: one TAT per limit; ARGV[1]: "" (use Redis's clock) or a fixed now in ms (the
# tests' deterministic clock); then (limit, window_ms) per key. All or nothing:
# returns 0 when admitted by every key (each TAT moved), else the ms to wait.
_GCRA_LUA = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
else
  now = tonumber(ARGV[1])
end
local wait = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', key) or '0') or 0
  if tat < now then tat = now end
  local new = tat + window / limit
  local w = new - window - now
  if w > 1e-6 then
    if w > wait then wait = w end
  end
  tats[i] = new
end
if wait > 0 then
  wait = math.ceil(wait)
  if wait < 1 then wait = 1 end
  return wait
end
-- A TAT in the past means a full burst: the key can go when it gets there (a fixed
-- test clock does not move with Redis's: keep its keys a minute longer).
local spare = 1
if ARGV[1] ~= '' then spare = 60000 end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%.17g', tats[i]), 'PX', math.ceil(tats[i] - now) + spare)
end
return 0
"""

Limit = tuple[str, int, int]  # (key, limit, window_ms)

_script_sha: str | None = None
_script_lock = threading.Lock()
_local_tats: dict[str, float] = {}
_local_lock = threading.Lock()


def gcra_decide(tats: dict[str, float], now: float, limits: list[Limit]) -> int:
    """The script's decision in Python (the in-process fallback, and its specification).

    ``tats`` maps keys to TATs (ms) and is updated in place when the event is
    admitted. Returns 0 when admitted, else the whole milliseconds to wait (>= 1).
    """
    wait = 0.0
    moved: list[tuple[str, float]] = []
    for key, limit, window in limits:
        limit, window = max(int(limit), 1), max(int(window), 1)  # as sent to the script
        tat = max(tats.get(key, 0.0), now)
        new = tat + window / limit
        wait = max(wait, new - window - now)
        moved.append((key, new))
    if wait > 1e-6:  # the script's tolerance: window / limit * limit may not be exact
        return max(math.ceil(wait), 1)
    for key, new in moved:
        tats[key] = new
    return 0


def _local_hit(limits: list[Limit]) -> int:
    """The in-process fallback of the Lua script (same semantics, one process)."""
    now = time.monotonic() * 1000
    with _local_lock:
        if len(_local_tats) > 100_000:  # bounded: drop TATs already in the past
            for key in [k for k, tat in _local_tats.items() if tat <= now]:
                del _local_tats[key]
        return gcra_decide(_local_tats, now, limits)


def rate_hit(limits: list[Limit], *, now_ms: float | None = None) -> int:
    """Record one event against every (key, limit, window_ms) if all admit it.

    Returns 0 when admitted, else milliseconds until the tightest limit admits one
    (nothing is recorded then). Atomic across processes through Redis. ``now_ms``
    replaces Redis's clock (tests only).
    """
    return rate_hits([limits], now_ms=now_ms)[0]


def rate_hits(batches: list[list[Limit]], *, now_ms: float | None = None) -> list[int]:
    """:func:`rate_hit` for each entry, in order, in one pipelined round trip."""
    global _script_sha
    client = keys.redis_client()
    if client is not None:
        try:
            if _script_sha is None:
                with _script_lock:
                    _script_sha = client.script_load(_GCRA_LUA)
            clock = "" if now_ms is None else repr(float(now_ms))
            for attempt in (1, 2):
                # EVALSHA by hand: a pipeline's own script support asks SCRIPT EXISTS
                # first, a second round trip every time.
                pipe = client.pipeline(transaction=False)
                for limits in batches:
                    args: list = [clock]
                    for _key, limit, window in limits:
                        args += [max(int(limit), 1), max(int(window), 1)]
                    pipe.evalsha(_script_sha, len(limits), *[k for k, _, _ in limits], *args)
                try:
                    return [int(wait) for wait in pipe.execute()]
                except NoScriptError:  # Redis restarted and forgot it: load, once more
                    if attempt == 2:
                        raise
                    client.script_load(_GCRA_LUA)
        except Exception as exc:  # Redis down: keep limiting, per process
            if not _is_redis_outage(exc):
                raise
            # Logged once per outage by the breaker (botplatform/breaker.py), not per call.
            logger.debug("Redis unavailable for rate limits, using in-process limits: %s", exc)
    return [_local_hit(limits) for limits in batches]


def _is_redis_outage(exc: Exception) -> bool:
    from django_redis.exceptions import ConnectionInterrupted
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return isinstance(
        exc, RedisConnectionError | RedisTimeoutError | ConnectionInterrupted | OSError
    )


# --- Incoming -------------------------------------------------------------------

IncomingVerdict = Literal["ok", "notify", "ignore"]
INCOMING_WINDOW_MS = 60_000


def incoming_check(*, project_id: int, telegram_id: int, limit: int) -> IncomingVerdict:
    """Count one incoming update of a user; decide whether to handle it.

    "ok": handle it. "notify": over the limit, tell the user once to wait.
    "ignore": over the limit and already told; drop silently until the window passes.
    """
    return incoming_check_many([(project_id, telegram_id, limit)])[0]


def incoming_check_many(checks: list[tuple[int, int, int]]) -> list[IncomingVerdict]:
    """:func:`incoming_check` for (project_id, telegram_id, limit) of a whole batch.

    The checks run in order in one pipelined round trip (a user twice in the batch
    is counted twice, as one by one); only users over their limit cost another.
    """
    limits = [
        (keys.rate_limit_user_key(project_id, telegram_id), max(int(limit), 1))
        for project_id, telegram_id, limit in checks
    ]
    waits = rate_hits([[(key, limit, INCOMING_WINDOW_MS)] for key, limit in limits])
    verdicts: list[IncomingVerdict] = []
    for (project_id, telegram_id, _limit), wait_ms in zip(checks, waits, strict=True):
        if wait_ms == 0:
            verdicts.append("ok")
            continue
        notice_key = keys.rate_limit_notice_key(project_id, telegram_id)
        first = cache.add(notice_key, 1, timeout=INCOMING_WINDOW_MS / 1000)
        verdicts.append("notify" if first else "ignore")
    return verdicts


# --- Outgoing -------------------------------------------------------------------


def send_slot_wait(*, bot_id: int, chat_id: int | None, per_second: int) -> float:
    """Try to take a send slot of the bot (and of the chat); seconds to wait, 0 if taken."""
    from django.conf import settings

    limits = [(keys.rate_limit_bot_send_key(bot_id), max(int(per_second), 1), 1000)]
    if chat_id is not None:
        limits.append(
            (
                keys.rate_limit_chat_send_key(bot_id, chat_id),
                settings.TELEGRAM_CHAT_SEND_LIMIT,
                settings.TELEGRAM_CHAT_SEND_WINDOW_MS,
            )
        )
    return rate_hit(limits) / 1000


def send_slot_acquire(*, bot_id: int, chat_id: int | None, per_second: int) -> float:
    """Block until the bot (and the chat) may send one more message; seconds waited."""
    waited = 0.0
    while True:
        wait = send_slot_wait(bot_id=bot_id, chat_id=chat_id, per_second=per_second)
        if wait <= 0:
            return waited
        time.sleep(wait)
        waited += wait
