"""Rate limits, both directions, as sliding-window logs in Redis.

A sliding-window log (a sorted set of timestamps per key) admits at most ``limit``
events in ANY window of ``window`` milliseconds, so there is no double burst at a
fixed window's edge. Checking and recording happen in one Lua script using Redis's
own clock, so every process (runners, web workers, Celery) shares one limit and
two of them can never both take the last slot. If Redis is unreachable the limits
fall back to in-process logs (per process, still bounded) and go back to Redis as
soon as it answers again.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from typing import Literal

from django.core.cache import cache
from redis.exceptions import NoScriptError

from botplatform import cache as keys

logger = logging.getLogger(__name__)

# KEYS: sorted-set logs; ARGV[1]: unique member; then (limit, window_ms) per key.
# Returns 0 when admitted (recorded in every log), else the milliseconds to wait.
_SLIDING_LOG_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  if count >= limit then
    local edge = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
    local w = tonumber(edge[2]) + window - now
    if w < 1 then w = 1 end
    if w > wait then wait = w end
  end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[1])
  redis.call('PEXPIRE', key, tonumber(ARGV[2 * i + 1]))
end
return 0
"""

_script = None
_script_lock = threading.Lock()
_local_logs: dict[str, deque[float]] = {}
_local_lock = threading.Lock()


def _local_sliding_log(limits: list[tuple[str, int, int]]) -> int:
    """The in-process fallback of the Lua script (same semantics, one process)."""
    now = time.monotonic() * 1000
    with _local_lock:
        wait = 0.0
        for key, limit, window in limits:
            log = _local_logs.setdefault(key, deque())
            while log and log[0] <= now - window:
                log.popleft()
            if len(log) >= limit:
                wait = max(wait, log[len(log) - limit] + window - now, 1)
        if wait:
            return int(wait)
        for key, _limit, _window in limits:
            _local_logs[key].append(now)
        return 0


def sliding_log_hit(limits: list[tuple[str, int, int]]) -> int:
    """Record one event against every (key, limit, window_ms) if all admit it.

    Returns 0 when admitted, else milliseconds until the tightest limit frees a slot
    (nothing is recorded then). Atomic across processes through Redis.
    """
    return _sliding_log_hits([limits])[0]


def _sliding_log_hits(batches: list[list[tuple[str, int, int]]]) -> list[int]:
    """:func:`sliding_log_hit` for each entry, in order, in one pipelined round trip."""
    global _script
    client = keys.redis_client()
    if client is not None:
        try:
            if _script is None:
                with _script_lock:
                    _script = client.register_script(_SLIDING_LOG_LUA)
            for attempt in (1, 2):
                # EVALSHA by hand: a pipeline's own script support asks SCRIPT EXISTS
                # first, a second round trip every time.
                pipe = client.pipeline(transaction=False)
                for limits in batches:
                    args: list = [uuid.uuid4().hex]
                    for _key, limit, window in limits:
                        args += [limit, window]
                    pipe.evalsha(_script.sha, len(limits), *[k for k, _, _ in limits], *args)
                try:
                    return [int(wait) for wait in pipe.execute()]
                except NoScriptError:  # Redis restarted and forgot it: load, once more
                    if attempt == 2:
                        raise
                    client.script_load(_SLIDING_LOG_LUA)
        except Exception as exc:  # Redis down: keep limiting, per process
            if not _is_redis_outage(exc):
                raise
            # Logged once per outage by the breaker (botplatform/breaker.py), not per call.
            logger.debug("Redis unavailable for rate limits, using in-process limits: %s", exc)
    return [_local_sliding_log(limits) for limits in batches]


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
    waits = _sliding_log_hits([[(key, limit, INCOMING_WINDOW_MS)] for key, limit in limits])
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
    return sliding_log_hit(limits) / 1000


def send_slot_acquire(*, bot_id: int, chat_id: int | None, per_second: int) -> float:
    """Block until the bot (and the chat) may send one more message; seconds waited."""
    waited = 0.0
    while True:
        wait = send_slot_wait(bot_id=bot_id, chat_id=chat_id, per_second=per_second)
        if wait <= 0:
            return waited
        time.sleep(wait)
        waited += wait
