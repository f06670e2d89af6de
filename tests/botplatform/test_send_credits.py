"""The reply's send slot taken with the update's incoming check (``ratelimit``)."""

from __future__ import annotations

import random

import pytest

from botplatform import cache as keys
from botplatform import ratelimit

pytestmark = pytest.mark.django_db


@pytest.fixture
def ids():
    ratelimit.send_credits_clear()
    rng = random.SystemRandom()
    yield rng.randrange(10**9, 2 * 10**9), rng.randrange(10**9, 2 * 10**9)
    ratelimit.send_credits_clear()


def test_the_reply_slot_is_taken_with_the_check_and_spent_once(ids):
    project, bot = ids
    reply = (bot, 5001, 30)
    assert ratelimit.incoming_check_many([(project, 5001, 10)], replies=[reply]) == ["ok"]
    assert ratelimit.send_credit_take(bot_id=bot, chat_id=5001)
    assert not ratelimit.send_credit_take(bot_id=bot, chat_id=5001)
    assert not ratelimit.send_credit_take(bot_id=bot, chat_id=5002)  # another chat's
    # The private chat's limit is the second TAT of the user's own key: one key.
    raw = keys.redis_client().get(keys.rate_limit_user_key(project, 5001)).decode()
    assert len(raw.split(",")) == 2


def test_slots_taken_ahead_never_exceed_the_bots_limit(ids):
    project, bot = ids
    chats = [6001 + i for i in range(5)]
    verdicts = ratelimit.incoming_check_many(
        [(project, chat, 10) for chat in chats], replies=[(bot, chat, 2) for chat in chats]
    )
    assert verdicts == ["ok"] * 5  # every update is handled...
    credited = [ratelimit.send_credit_take(bot_id=bot, chat_id=chat) for chat in chats]
    assert credited == [True, True, False, False, False]  # ...but the bot's burst is 2
    # The others wait for their slot in the sender as usual.
    assert ratelimit.send_slot_wait(bot_id=bot, chat_id=6003, per_second=2, project_id=project)


def test_a_refused_update_takes_no_send_slot(ids):
    project, bot = ids
    reply = (bot, 7001, 30)
    assert ratelimit.incoming_check_many([(project, 7001, 1)], replies=[reply]) == ["ok"]
    assert ratelimit.send_credit_take(bot_id=bot, chat_id=7001)
    bot_tat = keys.redis_client().get(keys.rate_limit_bot_send_key(bot))
    assert ratelimit.incoming_check_many([(project, 7001, 1)], replies=[reply]) == ["notify"]
    assert not ratelimit.send_credit_take(bot_id=bot, chat_id=7001)
    assert keys.redis_client().get(keys.rate_limit_bot_send_key(bot)) == bot_tat


def test_a_credit_left_unspent_expires(ids, monkeypatch):
    project, bot = ids
    monkeypatch.setattr(ratelimit, "CREDIT_SECONDS", -1.0)
    assert (
        ratelimit.incoming_check(
            project_id=project, telegram_id=8001, limit=10, reply=(bot, 8001, 30)
        )
        == "ok"
    )
    assert not ratelimit.send_credit_take(bot_id=bot, chat_id=8001)


def test_a_group_chat_keeps_a_send_limit_per_bot(ids):
    project, bot = ids
    limits = ratelimit._send_limits(bot_id=bot, chat_id=-100123, per_second=30, project_id=project)
    assert [limit[0] for limit in limits] == [
        keys.rate_limit_bot_send_key(bot),
        keys.rate_limit_chat_send_key(bot, -100123),
    ]
