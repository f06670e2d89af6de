"""Rate limits, both directions, as GCRA in Redis: one script call per update.

The generic cell rate algorithm (GCRA, the leaky bucket as a meter) keeps one number
per limit, the *theoretical arrival time* (TAT). A limit of ``limit`` events per
``window`` ms admits events one emission interval ``T = window / limit`` apart on
average, with a burst of up to ``limit`` at once: an event at ``now`` is admitted
when ``max(TAT, now) + T - now <= window``, and then moves the TAT there. So:

- a quiet key admits ``limit`` events at once, then one every ``T`` ms;
- in ANY interval of length ``w`` at most ``limit + w / T`` events pass (a burst and
  what refilled meanwhile);
- a refused event records nothing and learns how long to wait, to the millisecond.

One Lua script (``EVALSHA``) decides a whole *plan*: a list of checks, each a set of
limits admitted all or nothing, in order (a batch's users one after another). Inside
it reads every key with ONE ``MGET`` and writes each changed key with one ``SET …
PX``; a key may hold several TATs (comma-separated), so the user's incoming limit and
the send limit of their private chat are one key (:func:`incoming_check_many`). A
warm update therefore costs ``EVALSHA + MGET + SET + SET`` (its user, its bot) for the
incoming check AND the reply's send slot, taken in the same call (see
:func:`send_credit_take`).

The clock is the caller's (``time.time()``, ms), passed in: the script is
deterministic (replicable), and reads no ``TIME``. Runners trust each other's clocks
to within a few ms (NTP); a TAT written by a clock far ahead is clamped to ``now +
window`` by the next reader, so a wrong clock delays a limit by at most one window.
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

# KEYS: the plan's distinct keys, then keys only read (see ``read_joined``). ARGV: now
# (ms), the number of checks, the number of plan keys, then per check: ``after`` (1:
# skipped, -1, unless the check before it was admitted), the number of limits, and per
# limit (key index, TAT index in the key, limit, window_ms). Returns per check 0
# (admitted: every TAT moved), the ms to wait, or -1 (skipped); then the read keys'
# values (one MGET reads both).
_GCRA_LUA = """
local now, nrate = tonumber(ARGV[1]), tonumber(ARGV[3])
local raw = redis.call('MGET', unpack(KEYS))
local tats, width, dirty, out = {}, {}, {}, {}
for i = 1, nrate do
  local t = {}
  if raw[i] then
    for part in string.gmatch(raw[i], '[^,]+') do t[#t + 1] = tonumber(part) or 0 end
  end
  tats[i] = t
  width[i] = #t
end
local pos, prev = 4, 0
for c = 1, tonumber(ARGV[2]) do
  local after, m = tonumber(ARGV[pos]), tonumber(ARGV[pos + 1])
  pos = pos + 2
  local skip = after == 1 and prev ~= 0
  local wait, moved = 0, {}
  for j = 1, m do
    local k, f = tonumber(ARGV[pos]), tonumber(ARGV[pos + 1])
    local limit, window = tonumber(ARGV[pos + 2]), tonumber(ARGV[pos + 3])
    pos = pos + 4
    if not skip then
      local tat = tats[k][f] or 0
      if tat > now + window then tat = now + window end
      if tat < now then tat = now end
      local new = tat + window / limit
      if new - window - now > wait then wait = new - window - now end
      moved[#moved + 1] = {k, f, new}
    end
  end
  if skip then
    prev = -1
  elseif wait > 1e-6 then
    prev = math.max(math.ceil(wait), 1)
  else
    prev = 0
    for _, mv in ipairs(moved) do
      tats[mv[1]][mv[2]] = mv[3]
      if mv[2] > width[mv[1]] then width[mv[1]] = mv[2] end
      dirty[mv[1]] = true
    end
  end
  out[c] = prev
end
for i = 1, nrate do
  if dirty[i] then
    local parts, top = {}, now
    for f = 1, width[i] do
      local v = tats[i][f] or 0
      if v > top then top = v end
      parts[f] = string.format('%.17g', v)
    end
    redis.call('SET', KEYS[i], table.concat(parts, ','), 'PX', math.ceil(top - now) + 1000)
  end
end
for i = nrate + 1, #KEYS do out[#out + 1] = raw[i] end
return out
"""

# (key, limit, window_ms) or (key, limit, window_ms, index): ``index`` (0-based) picks
# one of the TATs a key holds; 0 when left out.
Limit = tuple
# One check of a plan: its limits (all or nothing) and ``after``: skip it unless the
# check before it was admitted.
Check = tuple[list[Limit], bool]

SKIPPED = -1
_script_sha: str | None = None
_script_lock = threading.Lock()
_local_tats: dict[str, list[float]] = {}
_local_lock = threading.Lock()


def _clamped(limit: Limit) -> tuple[str, int, int, int]:
    key, count, window = limit[0], limit[1], limit[2]
    index = int(limit[3]) if len(limit) > 3 else 0
    return key, max(int(count), 1), max(int(window), 1), max(index, 0)


def gcra_plan(store: dict[str, list[float]], now: float, plan: list[Check]) -> list[int]:
    """The script's decisions in Python (the in-process fallback, and its specification).

    ``store`` maps keys to their TATs (ms) and is updated in place for every admitted
    check. Returns per check 0 (admitted), the whole ms to wait (>= 1) or SKIPPED.
    """
    out: list[int] = []
    prev = 0
    for limits, after in plan:
        if after and prev != 0:
            prev = SKIPPED
            out.append(prev)
            continue
        wait = 0.0
        moved: list[tuple[str, int, float]] = []
        for key, count, window, index in map(_clamped, limits):
            tats = store.get(key, [])
            tat = min(max(tats[index] if index < len(tats) else 0.0, now), now + window)
            new = tat + window / count
            wait = max(wait, new - window - now)
            moved.append((key, index, new))
        if wait > 1e-6:  # the script's tolerance: window / limit * limit may not be exact
            prev = max(math.ceil(wait), 1)
        else:
            prev = 0
            for key, index, new in moved:
                tats = store.setdefault(key, [])
                tats.extend([0.0] * (index + 1 - len(tats)))
                tats[index] = new
        out.append(prev)
    return out


def gcra_decide(tats: dict[str, float], now: float, limits: list[Limit]) -> int:
    """One check of single-TAT keys (``tats``: key -> TAT, updated when admitted)."""
    store = {key: [tat] for key, tat in tats.items()}
    wait = gcra_plan(store, now, [(limits, False)])[0]
    tats.update({key: values[0] for key, values in store.items() if values})
    return wait


def _local_plan(plan: list[Check]) -> list[int]:
    """The in-process fallback of the Lua script (same semantics, one process)."""
    now = time.time() * 1000
    with _local_lock:
        if len(_local_tats) > 100_000:  # bounded: drop keys whose TATs are all past
            for key in [k for k, tats in _local_tats.items() if max(tats, default=0) <= now]:
                del _local_tats[key]
        return gcra_plan(_local_tats, now, plan)


def rate_plan(plan: list[Check], *, now_ms: float | None = None) -> list[int]:
    """Decide and record every check of ``plan`` in ONE script call (see the module).

    Returns per check 0 (admitted), the ms until it would be, or SKIPPED. Atomic
    across processes through Redis. ``now_ms``: the clock (default ``time.time()``).
    """
    return _plan_run(plan, [], now_ms=now_ms)[0]


def _plan_run(
    plan: list[Check], reads: list[str], *, now_ms: float | None = None
) -> tuple[list[int], list | None]:
    """The script call: (waits, raw values of ``reads``, None when Redis did not answer)."""
    global _script_sha
    if not plan:
        return [], None
    now = time.time() * 1000 if now_ms is None else float(now_ms)
    client = keys.redis_client()
    if client is not None:
        index: dict[str, int] = {}
        checks: list = []
        for limits, after in plan:
            checks += [int(after), len(limits)]
            for key, count, window, slot in map(_clamped, limits):
                checks += [index.setdefault(key, len(index) + 1), slot + 1, count, window]
        all_keys = [*index, *reads]
        args = [repr(now), len(plan), len(index), *checks]
        try:
            if _script_sha is None:
                with _script_lock:
                    _script_sha = client.script_load(_GCRA_LUA)
            try:
                # EVALSHA by hand: redis-py's script helper asks SCRIPT EXISTS first.
                out = client.evalsha(_script_sha, len(all_keys), *all_keys, *args)
            except NoScriptError:  # Redis restarted and forgot it: load it once more
                _script_sha = client.script_load(_GCRA_LUA)
                out = client.evalsha(_script_sha, len(all_keys), *all_keys, *args)
            return [int(wait) for wait in out[: len(plan)]], list(out[len(plan) :])
        except Exception as exc:  # Redis down: keep limiting, per process
            if not _is_redis_outage(exc):
                raise
            # Logged once per outage by the breaker (botplatform/breaker.py), not per call.
            logger.debug("Redis unavailable for rate limits, using in-process limits: %s", exc)
    return _local_plan(plan), None


class JoinedPlan:
    """A plan that rides along with a cache read: pass it to the read
    (``users.selectors.user_states_read(joined=...)``), which runs the plan and reads
    its keys in ONE script with ONE ``MGET`` (:func:`read_joined`)."""

    def __init__(self, plan: list[Check]) -> None:
        self.plan = plan
        self.result: list[int] | None = None

    def waits(self) -> list[int]:
        """The plan's decisions: taken with the read, or now if no read took it."""
        if self.result is None:
            self.result = rate_plan(self.plan)
        return self.result


def read_joined(joined: JoinedPlan, read_keys: list[str]) -> list | None:
    """Run ``joined`` (once) and return the raw values of ``read_keys`` (None: absent)
    from the same script; None when the plan already ran or Redis did not answer (then
    read them yourself)."""
    if joined.result is not None:
        return None
    joined.result, values = _plan_run(joined.plan, read_keys)
    return values


def rate_hit(limits: list[Limit], *, now_ms: float | None = None) -> int:
    """Record one event against every limit if all admit it; 0, else ms to wait."""
    return rate_plan([(limits, False)], now_ms=now_ms)[0]


def rate_hits(batches: list[list[Limit]], *, now_ms: float | None = None) -> list[int]:
    """:func:`rate_hit` for each entry, in order, in one script call."""
    return rate_plan([(limits, False) for limits in batches], now_ms=now_ms)


def _is_redis_outage(exc: Exception) -> bool:
    from django_redis.exceptions import ConnectionInterrupted
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return isinstance(
        exc, RedisConnectionError | RedisTimeoutError | ConnectionInterrupted | OSError
    )


# --- Send slots taken ahead -------------------------------------------------------
# A slot taken with an update's incoming check is credited to this thread (which
# handles and then delivers that update) and spent by the first message to the chat.
# Every message still has one slot recorded in Redis; it may go out up to
# CREDIT_SECONDS after its slot's time (a credit left unspent is a slot wasted).

CREDIT_SECONDS = 1.0
_credits = threading.local()


def _credit_add(bot_id: int, chat_id: int) -> None:
    table = getattr(_credits, "table", None)
    if table is None:
        table = _credits.table = {}
    table.setdefault((bot_id, chat_id), []).append(time.monotonic() + CREDIT_SECONDS)


def send_credit_take(*, bot_id: int, chat_id: int | None) -> bool:
    """Spend a send slot this thread took ahead for the chat; False if there is none."""
    table = getattr(_credits, "table", None)
    if not table or chat_id is None:
        return False
    deadlines = table.get((bot_id, chat_id))
    now = time.monotonic()
    while deadlines:
        if deadlines.pop(0) >= now:
            return True
    table.pop((bot_id, chat_id), None)
    return False


def send_credits_clear() -> None:
    """Forget every slot this thread took ahead (tests; a worker between jobs)."""
    _credits.table = {}


def _send_limits(*, bot_id: int, chat_id: int | None, per_second: int, project_id: int | None):
    """The send limits of one message: the bot's, and the chat's.

    A private chat's limit (``chat_id > 0`` is a user) is the second TAT of the user's
    incoming key in the project, so one key serves both directions; shared by the
    project's bots (a user talking to two bots of one project at once gets one chat
    budget). A group's (``chat_id < 0``) is per bot and chat.
    """
    from django.conf import settings

    limits: list[Limit] = [(keys.rate_limit_bot_send_key(bot_id), max(int(per_second), 1), 1000)]
    if chat_id is not None:
        limit, window = settings.TELEGRAM_CHAT_SEND_LIMIT, settings.TELEGRAM_CHAT_SEND_WINDOW_MS
        if chat_id > 0 and project_id is not None:
            limits.append((keys.rate_limit_user_key(project_id, chat_id), limit, window, 1))
        else:
            limits.append((keys.rate_limit_chat_send_key(bot_id, chat_id), limit, window))
    return limits


# --- Incoming -------------------------------------------------------------------

IncomingVerdict = Literal["ok", "notify", "ignore"]
INCOMING_WINDOW_MS = 60_000
# (bot_id, chat_id, the bot's sends per second): the slot of an update's first reply.
Reply = tuple[int, int, int]


def incoming_check(
    *, project_id: int, telegram_id: int, limit: int, reply: Reply | None = None
) -> IncomingVerdict:
    """Count one incoming update of a user; decide whether to handle it.

    "ok": handle it. "notify": over the limit, tell the user once to wait.
    "ignore": over the limit and already told; drop silently until the window passes.
    ``reply``: also take the send slot of the reply (see :func:`incoming_check_many`).
    """
    return incoming_check_many([(project_id, telegram_id, limit)], replies=[reply])[0]


def incoming_check_many(
    checks: list[tuple[int, int, int]], *, replies: list[Reply | None] | None = None
) -> list[IncomingVerdict]:
    """:func:`incoming_check` for (project_id, telegram_id, limit) of a whole batch.

    The checks run in order in ONE script call (a user twice in the batch is counted
    twice, as one by one); only users over their limit cost more. ``replies``: per
    check, the chat its reply goes to: when the update is admitted, the same call
    takes that message's send slot (bot and chat) and credits it to this thread
    (:func:`send_credit_take`), so a warm update needs no second call to send.
    """
    replies = replies or [None] * len(checks)
    return incoming_verdicts(
        checks, replies=replies, waits=rate_plan(incoming_plan(checks, replies=replies))
    )


def incoming_plan(
    checks: list[tuple[int, int, int]], *, replies: list[Reply | None]
) -> list[Check]:
    """The plan of :func:`incoming_check_many` (to run joined with a read)."""
    plan: list[Check] = []
    for (project_id, telegram_id, limit), reply in zip(checks, replies, strict=True):
        key = keys.rate_limit_user_key(project_id, telegram_id)
        plan.append(([(key, max(int(limit), 1), INCOMING_WINDOW_MS)], False))
        if reply is not None:
            bot_id, chat_id, per_second = reply
            plan.append(
                (
                    _send_limits(
                        bot_id=bot_id, chat_id=chat_id, per_second=per_second, project_id=project_id
                    ),
                    True,
                )
            )
    return plan


def incoming_verdicts(
    checks: list[tuple[int, int, int]], *, replies: list[Reply | None], waits: list[int]
) -> list[IncomingVerdict]:
    """The verdicts of :func:`incoming_check_many` from its plan's ``waits``."""
    decided = iter(waits)
    verdicts: list[IncomingVerdict] = []
    for (project_id, telegram_id, _limit), reply in zip(checks, replies, strict=True):
        wait_ms = next(decided)
        if reply is not None and next(decided) == 0:
            _credit_add(reply[0], reply[1])
        if wait_ms == 0:
            verdicts.append("ok")
            continue
        notice_key = keys.rate_limit_notice_key(project_id, telegram_id)
        first = cache.add(notice_key, 1, timeout=INCOMING_WINDOW_MS / 1000)
        verdicts.append("notify" if first else "ignore")
    return verdicts


# --- Outgoing -------------------------------------------------------------------


def send_slot_wait(
    *, bot_id: int, chat_id: int | None, per_second: int, project_id: int | None = None
) -> float:
    """Try to take a send slot of the bot (and of the chat); seconds to wait, 0 if taken.

    ``project_id``: the bot's project, which owns a private chat's limit (see
    ``_send_limits``); without it the chat's limit is the bot's own.
    """
    limits = _send_limits(
        bot_id=bot_id, chat_id=chat_id, per_second=per_second, project_id=project_id
    )
    return rate_hit(limits) / 1000


def send_slot_acquire(
    *, bot_id: int, chat_id: int | None, per_second: int, project_id: int | None = None
) -> float:
    """Block until the bot (and the chat) may send one more message; seconds waited.

    A slot this thread took ahead with the update (:func:`incoming_check_many`) is
    spent first, without a call to Redis.
    """
    if send_credit_take(bot_id=bot_id, chat_id=chat_id):
        return 0.0
    waited = 0.0
    while True:
        wait = send_slot_wait(
            bot_id=bot_id, chat_id=chat_id, per_second=per_second, project_id=project_id
        )
        if wait <= 0:
            return waited
        time.sleep(wait)
        waited += wait
