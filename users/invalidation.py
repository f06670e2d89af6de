"""THE invalidation of a user's cached state (profile and variables).

Every writer of the loyalty core (the ledger, bot users, referrals, variables, the
admin) calls :func:`user_state_changed`; reads are in :mod:`users.selectors`.
"""

from __future__ import annotations

import secrets
from functools import partial

from django.core.cache import cache
from django.db import transaction

from botplatform.cache import (
    USER_STATE_GENERATION_TTL,
    redis_pipeline,
    user_profile_key,
    user_state_generation_key,
    user_variables_key,
)
from users.selectors import CACHE_ERRORS, cache_error_log


def user_state_changed(*, user_id: int, project_id: int) -> None:
    """THE invalidation of a user's cached state (profile and variables): every writer
    calls it. Drops the cached copies once the current transaction commits (at once
    outside one), so no reader caches the old state again after the write.
    """
    transaction.on_commit(partial(_state_cache_clear, user_id=user_id, project_id=project_id))


def _state_cache_clear(*, user_id: int, project_id: int) -> None:
    """Make every cached copy of the user's state stale, then drop it (after commit).

    Never raises: a cache outage is logged, the keys expire on their own TTLs.
    """
    generation_key = user_state_generation_key(user_id, project_id)
    data_keys = [user_variables_key(user_id, project_id), user_profile_key(user_id, project_id)]
    token = secrets.token_hex(8)
    try:
        pipeline = redis_pipeline()
        if pipeline is None:
            cache.set(generation_key, token, USER_STATE_GENERATION_TTL)
            cache.delete_many(data_keys)
            return
        cache.set(generation_key, token, USER_STATE_GENERATION_TTL, client=pipeline)
        cache.delete_many(data_keys, client=pipeline)
        pipeline.execute()
    except CACHE_ERRORS as exc:
        # The recovery flush (botplatform.cache_backend) drops user:* keys written
        # before an outage, so a copy missed here cannot outlive it.
        cache_error_log(exc, "cache unreachable; user %s state not invalidated", user_id)
