"""Bot leases held through one runner key (``botplatform/telegram/leases.py``)."""

from __future__ import annotations

import uuid

import pytest

from botplatform import cache as keys
from botplatform.telegram import leases

pytestmark = pytest.mark.django_db

TTL = 5_000


@pytest.fixture
def names():
    client = keys.redis_client()
    tag = uuid.uuid4().hex[:8]
    bot = 10**9 + int(tag, 16) % 10**6
    yield client, f"a:{tag}", f"b:{tag}", bot
    client.delete(keys.telegram_lease_key(bot))
    client.delete(keys.telegram_runner_key(f"a:{tag}"), keys.telegram_runner_key(f"b:{tag}"))


def test_a_runner_key_is_set_even_before_it_holds_any_bot(names):
    client, a, _b, _bot = names
    assert leases.leases_renew(holder=a, bot_ids=[], ttl_ms=TTL) == {}
    assert 0 < client.pttl(keys.telegram_runner_key(a)) <= TTL


def test_a_live_runners_lease_cannot_be_taken(names):
    _client, a, b, bot = names
    leases.leases_renew(holder=a, bot_ids=[], ttl_ms=TTL)
    leases.leases_renew(holder=b, bot_ids=[], ttl_ms=TTL)
    assert leases.lease_acquire(bot_id=bot, holder=a, ttl_ms=TTL)
    assert not leases.lease_acquire(bot_id=bot, holder=b, ttl_ms=TTL)
    assert leases.leases_renew(holder=a, bot_ids=[bot], ttl_ms=TTL) == {bot: True}
    assert leases.lease_holder(bot_id=bot) == a


def test_a_dead_runners_leases_are_free_and_it_learns_so_at_its_next_renewal(names):
    client, a, b, bot = names
    leases.leases_renew(holder=a, bot_ids=[], ttl_ms=TTL)
    assert leases.lease_acquire(bot_id=bot, holder=a, ttl_ms=TTL)
    client.delete(keys.telegram_runner_key(a))  # a stalled past its TTL
    assert leases.lease_holder(bot_id=bot) is None
    leases.leases_renew(holder=b, bot_ids=[], ttl_ms=TTL)
    assert leases.lease_acquire(bot_id=bot, holder=b, ttl_ms=TTL)
    assert leases.leases_renew(holder=a, bot_ids=[bot], ttl_ms=TTL) == {bot: False}
    assert leases.leases_renew(holder=b, bot_ids=[bot], ttl_ms=TTL) == {bot: True}


def test_a_lease_gone_from_redis_is_taken_again_by_its_holder(names):
    client, a, _b, bot = names
    leases.leases_renew(holder=a, bot_ids=[], ttl_ms=TTL)
    assert leases.lease_acquire(bot_id=bot, holder=a, ttl_ms=TTL)
    client.delete(keys.telegram_lease_key(bot))  # Redis restarted empty
    assert leases.leases_renew(holder=a, bot_ids=[bot], ttl_ms=TTL) == {bot: True}
    assert client.get(keys.telegram_lease_key(bot)) == a.encode()


def test_only_the_holder_releases_and_a_clean_stop_frees_the_rest(names):
    _client, a, b, bot = names
    leases.leases_renew(holder=a, bot_ids=[], ttl_ms=TTL)
    leases.leases_renew(holder=b, bot_ids=[], ttl_ms=TTL)
    assert leases.lease_acquire(bot_id=bot, holder=a, ttl_ms=TTL)
    leases.lease_release(bot_id=bot, holder=b)
    assert leases.lease_holder(bot_id=bot) == a
    leases.runner_leave(holder=a)
    assert leases.lease_holder(bot_id=bot) is None
    assert leases.lease_acquire(bot_id=bot, holder=b, ttl_ms=TTL)
