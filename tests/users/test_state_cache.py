"""A user's cached state: one Redis round trip when warm, never stale after a write."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone
from django_redis import get_redis_connection

from botplatform.cache import (
    USER_PROFILE_TTL,
    USER_VARIABLES_TTL,
    user_profile_key,
    user_state_generation_key,
    user_variables_key,
)
from tests.factories import bot_user_create
from tests.users.helpers import redis_round_trips
from users import botusers, invalidation, ledger, referrals, variables
from users.models import BonusTransaction, BotUser
from users.selectors import _state_load, _states_store, user_state_get


@pytest.fixture
def commit(django_capture_on_commit_callbacks):
    """Run a write and its after-commit callbacks, as a real commit would."""

    def run(write, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return write(**kwargs)

    return run


def state(user: BotUser):
    return user_state_get(user_id=user.pk, project_id=user.project_id)


def test_miss_loads_from_database_and_caches_both_keys_with_their_ttls(bot_user, monkeypatch):
    bot_user.variables.create(key="city", value="Riga")
    with CaptureQueriesContext(connection) as queries, redis_round_trips(monkeypatch) as trips:
        first = state(bot_user)
    assert len(queries) == 2
    assert trips.count == 2  # MGET, then one pipeline writing both keys
    assert first.variables == {"city": "Riga", "balance": 0, "level": "", "referrals": 0}
    assert first.profile == {
        "id": bot_user.pk,
        "telegram_id": bot_user.telegram_id,
        "chat_id": bot_user.chat_id,
        "username": "",
        "first_name": bot_user.first_name,
        "last_name": "",
        "language_code": "",
        "referral_code": bot_user.referral_code,
        "is_blocked": False,
    }
    raw = get_redis_connection("default")
    variables_ms = raw.pttl(user_variables_key(bot_user.pk, bot_user.project_id))
    profile_ms = raw.pttl(user_profile_key(bot_user.pk, bot_user.project_id))
    assert USER_VARIABLES_TTL * 1000 - 5_000 < variables_ms <= USER_VARIABLES_TTL * 1000
    assert USER_PROFILE_TTL * 1000 - 5_000 < profile_ms <= USER_PROFILE_TTL * 1000


def test_warm_read_is_one_redis_round_trip_and_no_database_query(bot_user, monkeypatch):
    bot_user.variables.create(key="visits", value=3)
    cold = state(bot_user)
    with CaptureQueriesContext(connection) as queries, redis_round_trips(monkeypatch) as trips:
        warm = state(bot_user)
    assert len(queries) == 0
    assert trips.count == 1
    assert warm == cold


def test_warm_read_after_an_invalidation_still_one_round_trip(bot_user, commit, monkeypatch):
    commit(ledger.bonus_earn, user_id=bot_user.pk, amount=5, idempotency_key="e")
    state(bot_user)  # reload under the new generation
    with CaptureQueriesContext(connection) as queries, redis_round_trips(monkeypatch) as trips:
        assert state(bot_user).variables["balance"] == 5
    assert (len(queries), trips.count) == (0, 1)


def test_invalidation_is_one_round_trip(bot_user, commit, monkeypatch):
    state(bot_user)
    with redis_round_trips(monkeypatch) as trips:
        commit(ledger.bonus_earn, user_id=bot_user.pk, amount=5, idempotency_key="e")
    assert trips.count == 1
    assert cache.get(user_variables_key(bot_user.pk, bot_user.project_id)) is None
    assert cache.get(user_profile_key(bot_user.pk, bot_user.project_id)) is None


# Every write path: warm the cache, write, and the very next read shows the write.


def _seed(user: BotUser, commit) -> None:
    commit(ledger.bonus_earn, user_id=user.pk, amount=100, idempotency_key="seed")
    user.variables.create(key="city", value="Riga")
    user.variables.create(key="visits", value=1)
    # Rows created directly above bypass the services: drop the cached state once.
    commit(invalidation.user_state_changed, user_id=user.pk, project_id=user.project_id)


WRITES = {
    "earn": (
        lambda u: ledger.bonus_earn(user_id=u.pk, amount=5, idempotency_key="w"),
        lambda s: s.variables["balance"] == 105,
    ),
    "spend": (
        lambda u: ledger.bonus_spend(user_id=u.pk, amount=40, idempotency_key="w"),
        lambda s: s.variables["balance"] == 60,
    ),
    "adjust": (
        lambda u: ledger.bonus_adjust(user_id=u.pk, amount=-1, reason="r", created_by=None),
        lambda s: s.variables["balance"] == 99,
    ),
    "spend_for_purchase": (
        lambda u: ledger.bonus_spend_for_purchase(
            user_id=u.pk, amount=10, purchase_amount=100, idempotency_key="w"
        ),
        lambda s: s.variables["balance"] == 90,
    ),
    "variable_set": (
        lambda u: variables.user_variable_set(
            user_id=u.pk, project_id=u.project_id, key="city", value="Oslo"
        ),
        lambda s: s.variables["city"] == "Oslo",
    ),
    "variable_delete": (
        lambda u: variables.user_variable_delete(user_id=u.pk, project_id=u.project_id, key="city"),
        lambda s: "city" not in s.variables,
    ),
    "variable_increment": (
        lambda u: variables.user_variable_increment(
            user_id=u.pk, project_id=u.project_id, key="visits", by=2
        ),
        lambda s: s.variables["visits"] == 3,
    ),
    "profile_upsert": (
        lambda u: botusers.bot_user_upsert(
            project_id=u.project_id,
            telegram_id=u.telegram_id,
            chat_id=u.chat_id,
            first_name="Renamed",
        ),
        lambda s: s.profile["first_name"] == "Renamed",
    ),
    "level_up": (
        lambda u: ledger.bonus_earn(user_id=u.pk, amount=1000, idempotency_key="w"),
        lambda s: s.variables["level"] == "Silver" and s.variables["balance"] == 1100,
    ),
}


@pytest.mark.parametrize("name", sorted(WRITES))
def test_next_read_after_every_write_path_is_fresh(bot_user, commit, name):
    write, fresh = WRITES[name]
    _seed(bot_user, commit)
    before = state(bot_user)
    assert not fresh(before)
    assert state(bot_user) == before  # warm
    commit(lambda: write(bot_user))
    assert fresh(state(bot_user)), state(bot_user)


def test_expiry_write_path_is_fresh(project, commit):
    project.bonus_expiry_days = 30
    project.save(update_fields=["bonus_expiry_days"])
    user = bot_user_create(project=project)
    commit(ledger.bonus_earn, user_id=user.pk, amount=100, idempotency_key="old")
    BonusTransaction.objects.filter(user=user).update(
        created_at=timezone.now() - timedelta(days=40)
    )
    assert state(user).variables["balance"] == 100
    commit(ledger.bonus_expire, user_id=user.pk)
    assert state(user).variables["balance"] == 0


def test_referral_write_path_is_fresh_for_the_referrer(project, commit):
    referrer = bot_user_create(project=project)
    invited = bot_user_create(project=project)
    assert state(referrer).variables["referrals"] == 0
    assert commit(referrals.referral_apply, user=invited, code=f"ref_{referrer.referral_code}")
    after = state(referrer).variables
    assert (after["referrals"], after["balance"]) == (1, project.referral_reward)


def test_reader_that_loaded_before_a_write_cannot_cache_a_stale_balance(bot_user, commit):
    """The classic race: read DB, (write + invalidate), then store the old copy."""
    key = user_state_generation_key(bot_user.pk, bot_user.project_id)
    generation = cache.get(key)
    profile, variables = _state_load(user_id=bot_user.pk)  # balance 0
    commit(ledger.bonus_earn, user_id=bot_user.pk, amount=70, idempotency_key="e")
    _states_store([(bot_user.pk, bot_user.project_id, generation, profile, variables)])
    assert cache.get(user_variables_key(bot_user.pk, bot_user.project_id)) is not None
    assert state(bot_user).variables["balance"] == 70


# The project's cache backend (botplatform.env.cache_config) pointed at a port where
# no Redis listens: reads of user state miss, so the database answers.
DEAD_REDIS = {
    "default": {
        "BACKEND": "botplatform.cache_backend.ResilientRedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "KEY_FUNCTION": "botplatform.cache.raw_key",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
    }
}


def test_reads_and_writes_keep_working_when_redis_is_down(bot_user, commit, caplog):
    # DEBUG too: once the breaker for this address is open (an earlier test may have
    # opened it), the pipelined writes log their skip quietly.
    caplog.set_level(logging.DEBUG, logger="users")
    with override_settings(CACHES=DEAD_REDIS):
        assert state(bot_user).variables["balance"] == 0
        commit(ledger.bonus_earn, user_id=bot_user.pk, amount=5, idempotency_key="e")
        commit(
            variables.user_variable_set,
            user_id=bot_user.pk,
            project_id=bot_user.project_id,
            key="k",
            value=1,
        )
        assert state(bot_user).variables == {
            "k": 1,
            "balance": 5,
            "level": "Bronze",
            "referrals": 0,
        }
    assert "cache unreachable" in caplog.text


def test_unknown_user_raises(db):
    with pytest.raises(BotUser.DoesNotExist):
        user_state_get(user_id=424242, project_id=1)
