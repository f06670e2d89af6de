"""The embedded default's cache (no REDIS_URL): per-process memory without stale copies.

``runserver`` and ``runbot`` are separate processes with separate memory; an
invalidation in one cannot reach the other, so state another process may change is
never kept (Redis outages are in tests/resilience/test_cache_fallback.py).
"""

from __future__ import annotations

from django.utils.module_loading import import_string

from botplatform import cache as keys
from botplatform.env import cache_config


def _process_cache(name: str):
    config = cache_config("")
    return import_string(config["BACKEND"])(name, {})


def test_a_write_in_one_process_is_never_hidden_by_another_process_copy():
    runbot, runserver = _process_cache("runbot"), _process_cache("runserver")
    state = keys.user_variables_key(7, 1)
    waiting = keys.workflow_waiting_key("3:42")
    triggers = keys.workflow_triggers_key(1)
    runbot.set(state, {"balance": 100}, 60)
    runbot.set_many({waiting: 5, triggers: ["table"]}, 60)
    # An operator's change (balance, cancelled wait, published workflow) in the other process:
    runserver.delete_many([state, waiting, triggers])
    assert runbot.get(state) is None  # the database answers, not an old copy
    assert runbot.get_many([state, waiting, triggers]) == {}
    assert runbot.add(state, 1) is False and not runbot.has_key(state)


def test_process_local_families_are_cached_as_usual():
    cache = _process_cache("runbot-2")
    key = keys.workflow_version_key(1, 2)  # immutable per version: safe in any process
    cache.set(key, {"definition": {}}, 60)
    assert cache.get(key) == {"definition": {}}
    assert cache.add(keys.broadcast_pace_key(9), 1, 1) is True
    assert cache.add(keys.broadcast_pace_key(9), 1, 1) is False
