"""Reads of users, their variables and the bonus ledger.

A user's whole state for one message (profile + variables) is read through the cache
(``user:{userId}:{projectId}:variables``, ``...:profile``): on a warm cache that is one
Redis round trip (MGET) and no database query. Writes never patch the cached copy;
they call :func:`users.invalidation.user_state_changed`, which after commit rewrites the user's
generation token and drops both keys (one pipelined round trip). Cached copies carry
the generation they were built under, so a reader that loaded the database before a
write and stores its copy after it can never make a stale balance visible.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import cache
from django.db.models import Count

from botplatform import metrics, ratelimit
from botplatform.breaker import CircuitOpen
from botplatform.cache import (
    USER_PROFILE_TTL,
    USER_VARIABLES_TTL,
    redis_pipeline,
    user_profile_key,
    user_state_generation_key,
    user_variables_key,
)
from users.models import BonusTransaction, BotUser, UserVariable
from users.readahead import UsersAhead

logger = logging.getLogger(__name__)

# Variables computed from the user row; custom variables may not use these names.
COMPUTED_VARIABLES = frozenset({"balance", "level", "referrals"})

PROFILE_FIELDS = (
    "id",
    "telegram_id",
    "chat_id",
    "username",
    "first_name",
    "last_name",
    "language_code",
    "referral_code",
    "is_blocked",
)

HISTORY_MAX_LIMIT = 100


@dataclass(frozen=True)
class UserState:
    """Everything a workflow step may read about a user, for one message."""

    profile: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)


def _cache_errors() -> tuple[type[BaseException], ...]:
    """Errors of an unreachable cache server: reads fall back to the database."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        import redis.exceptions
        from django_redis.exceptions import ConnectionInterrupted

        errors += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
        errors.append(ConnectionInterrupted)
    except ImportError:  # pragma: no cover - both are requirements
        pass
    return tuple(errors)


CACHE_ERRORS = _cache_errors()


def _states_load(*, user_ids: list[int]) -> dict[int, tuple[dict[str, Any], dict[str, Any]]]:
    """Profile and variables of several users from the database: two queries."""
    rows = (
        BotUser.objects.filter(pk__in=user_ids)
        .annotate(referral_count=Count("referrals"))
        .values(*PROFILE_FIELDS, "balance", "level", "referral_count")
    )
    computed = {}
    states: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
    for row in rows:
        computed[row["id"]] = {
            "balance": row["balance"],
            "level": row["level"],
            "referrals": row["referral_count"],
        }
        states[row["id"]] = ({name: row[name] for name in PROFILE_FIELDS}, {})
    custom = UserVariable.objects.filter(user_id__in=list(states)).values_list(
        "user_id", "key", "value"
    )
    for user_id, key, value in custom:
        states[user_id][1][key] = value
    for user_id, (_profile, variables) in states.items():
        variables.update(computed[user_id])  # the computed names win over custom ones
    return states


def _state_load(*, user_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Profile and variables from the database: two queries."""
    states = _states_load(user_ids=[user_id])
    if user_id not in states:
        raise BotUser.DoesNotExist(f"no user {user_id}")
    return states[user_id]


StateEntry = tuple[int, int, str | None, dict[str, Any], dict[str, Any]]


def _states_store(entries: list[StateEntry]) -> None:
    """Cache both halves of each (user_id, project_id, generation, profile, variables),
    tagged with the generation read before the database load: one pipelined trip."""
    values = {}
    for user_id, project_id, generation, profile, variables in entries:
        values[user_variables_key(user_id, project_id)] = (
            {"generation": generation, "data": variables},
            USER_VARIABLES_TTL,
        )
        values[user_profile_key(user_id, project_id)] = (
            {"generation": generation, "data": profile},
            USER_PROFILE_TTL,
        )
    pipeline = redis_pipeline()
    if pipeline is None:
        for key, (value, ttl) in values.items():
            cache.set(key, value, ttl)
        return
    for key, (value, ttl) in values.items():
        cache.set(key, value, ttl, client=pipeline)
    pipeline.execute()


def _cached_state(cached: dict, *, user_id: int, project_id: int) -> tuple[dict, dict] | None:
    """(profile, variables) if both cached halves carry the current generation."""
    variables_key, profile_key, generation_key = user_state_keys(
        user_id=user_id, project_id=project_id
    )
    generation = cached.get(generation_key)
    if generation is not None:
        generation = str(generation)
    variables = cached.get(variables_key)
    profile = cached.get(profile_key)
    if (
        isinstance(variables, dict)
        and isinstance(profile, dict)
        and variables.get("generation") == generation
        and profile.get("generation") == generation
    ):
        return profile["data"], variables["data"]
    return None


def _generation(cached: dict, *, user_id: int, project_id: int) -> str | None:
    generation = cached.get(user_state_generation_key(user_id, project_id))
    return None if generation is None else str(generation)


def user_state_keys(*, user_id: int, project_id: int) -> list[str]:
    """The cache keys :func:`user_state_get` reads (variables, profile, generation)."""
    return [
        user_variables_key(user_id, project_id),
        user_profile_key(user_id, project_id),
        user_state_generation_key(user_id, project_id),
    ]


def user_state_read(
    *, user_id: int, project_id: int, extra_keys: list[str], ahead: UsersAhead | None = None
) -> dict:
    """``cache.get_many`` of ``extra_keys`` and the user's state keys: ONE ``MGET``.

    No sliding expiry (an ``EXPIRE`` per key per message, two more commands): the
    state's TTLs are fixed from the last load and long (``botplatform.cache``), so an
    active user reloads from the database once per TTL. Staleness is decided by the
    generation token, never by the TTL, so a long TTL serves nothing stale. Caches
    that are not django-redis get a plain ``get_many``. Never raises on cache errors:
    the read's are caught here, and the cache backend's fallback answers the rest as
    misses.
    ``ahead``: a batch's read-ahead (:class:`users.readahead.UsersAhead`), which read
    them for every user at once: the first read of each user is served from there.
    """
    if ahead is not None and (user_id, project_id) in ahead.state_users:
        ahead.state_users.discard((user_id, project_id))
        keys = [*extra_keys, *user_state_keys(user_id=user_id, project_id=project_id)]
        if all(key in ahead.state_read for key in keys):
            return {key: ahead.state_values[key] for key in keys if key in ahead.state_values}
    return user_states_read(users=[(user_id, project_id)], extra_keys=extra_keys)


def user_states_read(
    *,
    users: list[tuple[int, int]],
    extra_keys: list[str],
    joined: ratelimit.JoinedPlan | None = None,
) -> dict:
    """:func:`user_state_read` for several (user_id, project_id) at once: one round trip.

    ``joined``: a batch's rate limits, decided by the same script that reads the keys.
    """
    state_keys = [
        key
        for user_id, project_id in users
        for key in user_state_keys(user_id=user_id, project_id=project_id)
    ]
    keys = [*extra_keys, *state_keys]
    backend = getattr(cache, "client", None)
    breaker = getattr(cache, "breaker", None)  # botplatform.cache_backend's fallback
    if backend is None or not hasattr(backend, "decode"):
        return cache.get_many(keys)
    if breaker is not None and (not breaker.available or breaker.flush_pending):
        return cache.get_many(keys)  # an outage or its clean-up: the fallback decides
    raw_keys = [backend.make_key(key) for key in keys]
    try:
        values = None if joined is None else ratelimit.read_joined(joined, raw_keys)
        if values is None:
            values = backend.get_client(write=False).mget(raw_keys)
    except CACHE_ERRORS:
        return cache.get_many(keys)  # lets the fallback notice the outage and answer
    return {key: backend.decode(v) for key, v in zip(keys, values, strict=True) if v is not None}


def user_states_prefetch(
    ahead: UsersAhead,
    *,
    users: list[tuple[int, int]],
    extra_keys: list[str],
    joined: ratelimit.JoinedPlan | None = None,
) -> None:
    """Read the state of a batch's users (and ``extra_keys``) ahead, into ``ahead``;
    ``joined``: rate limits decided in the same script (:func:`user_states_read`).

    An unreachable cache reads as misses: the states are then loaded from the database.
    """
    if not users:
        return
    values = user_states_read(users=users, extra_keys=extra_keys, joined=joined)
    stale = [
        (user_id, project_id)
        for user_id, project_id in users
        if _cached_state(values, user_id=user_id, project_id=project_id) is None
    ]
    if stale:  # one load and one store for all of them instead of two queries each
        states = _states_load(user_ids=[user_id for user_id, _ in stale])
        entries: list[StateEntry] = []
        for user_id, project_id in stale:
            if user_id not in states:
                continue
            profile, variables = states[user_id]
            generation = _generation(values, user_id=user_id, project_id=project_id)
            entries.append((user_id, project_id, generation, profile, variables))
            values[user_variables_key(user_id, project_id)] = {
                "generation": generation,
                "data": variables,
            }
            values[user_profile_key(user_id, project_id)] = {
                "generation": generation,
                "data": profile,
            }
            ahead.state_loaded.add((user_id, project_id))
        try:
            _states_store(entries)
        except CACHE_ERRORS as exc:
            cache_error_log(exc, "cache unreachable; batch user state not cached (%s)", exc)
    ahead.state_values.update(values)
    ahead.state_read.update(extra_keys)
    for user_id, project_id in users:
        ahead.state_read.update(user_state_keys(user_id=user_id, project_id=project_id))
    ahead.state_users.update(users)


def user_state_get(
    *,
    user_id: int,
    project_id: int,
    cached: dict | None = None,
    ahead: UsersAhead | None = None,
) -> UserState:
    """A user's profile and variables (custom + ``balance``, ``level``, ``referrals``).

    Warm cache: one Redis round trip, no database query. Miss (or a copy from an older
    generation): two queries, then both keys are written in one pipelined round trip.
    If the cache server is down the database answers. Raises BotUser.DoesNotExist.

    ``cached``: what the caller's one ``cache.get_many`` of :func:`user_state_keys`
    (plus keys of its own, :func:`user_state_read`) returned, so it pays one round
    trip; the generation check applies as usual. ``ahead``: the batch that read it.
    """
    if cached is None:
        # An unreachable Redis reads as a miss (cache_backend): the database answers.
        cached = cache.get_many(user_state_keys(user_id=user_id, project_id=project_id))

    state = _cached_state(cached, user_id=user_id, project_id=project_id)
    if state is not None:
        # Loaded from the database for the whole batch (a miss), or a plain hit.
        loaded = ahead is not None and (user_id, project_id) in ahead.state_loaded
        if loaded:
            ahead.state_loaded.discard((user_id, project_id))
        metrics.cache_lookup("user_state", hit=not loaded)
        return UserState(profile=state[0], variables=state[1])
    metrics.cache_lookup("user_state", hit=False)

    profile, variables = _state_load(user_id=user_id)
    try:
        _states_store(
            [
                (
                    user_id,
                    project_id,
                    _generation(cached, user_id=user_id, project_id=project_id),
                    profile,
                    variables,
                )
            ]
        )
    except CACHE_ERRORS as exc:
        cache_error_log(exc, "cache unreachable; user %s state not cached", user_id)
    return UserState(profile=profile, variables=variables)


def cache_error_log(exc: Exception, message: str, *args) -> None:
    """Quiet while the circuit breaker is open: it already logged the outage once."""
    level = logging.DEBUG if isinstance(exc, CircuitOpen) else logging.WARNING
    logger.log(level, message, *args)


def bonus_history_get(*, user_id: int, limit: int = 5) -> list[BonusTransaction]:
    """The user's latest ledger entries, newest first (the "History" button)."""
    limit = max(1, min(int(limit), HISTORY_MAX_LIMIT))
    return list(
        BonusTransaction.objects.filter(user_id=user_id).order_by("-created_at", "-id")[:limit]
    )


def level_for(*, levels: object, lifetime_earned: int) -> str:
    """The name of the highest level whose threshold ``lifetime_earned`` has reached.

    ``levels`` is the project's JSON list of ``{"name", "threshold"}``; malformed
    entries are ignored rather than breaking a bonus operation.
    """
    best_name, best_threshold = "", None
    if not isinstance(levels, list):
        return best_name
    for level in levels:
        if not isinstance(level, dict):
            continue
        name, threshold = level.get("name"), level.get("threshold")
        if not isinstance(name, str) or isinstance(threshold, bool):
            continue
        if not isinstance(threshold, int | float):
            continue
        if threshold <= lifetime_earned and (best_threshold is None or threshold >= best_threshold):
            best_name, best_threshold = name, threshold
    return best_name


def referral_link_build(*, bot_username: str, referral_code: str) -> str:
    """The Telegram deep link that starts the bot with ``/start ref_<code>``."""
    return f"https://t.me/{bot_username.lstrip('@')}?start=ref_{referral_code}"


def bonus_spend_limit_get(*, user_id: int, purchase_amount: int) -> int:
    """How many bonuses may pay for a purchase: the project's share cap and the balance."""
    row = BotUser.objects.values("balance", "project__max_bonus_share_percent").get(pk=user_id)
    cap = purchase_amount * row["project__max_bonus_share_percent"] // 100
    return max(0, min(row["balance"], cap))
