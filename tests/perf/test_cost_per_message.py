"""What one warm message costs: SQL statements and Redis round trips, counted.

The figures asserted are the ones achieved (docs/performance.md): a regression that
adds a query or a round trip to the hot path fails here, without any timing.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from botplatform import metrics
from botplatform.telegram.dispatch import update_run, updates_record
from tests.users.helpers import redis_round_trips

CHAT = 777001

# Measured with the demo conversation, warm caches, outside a test transaction
# (each of the two transactions counts its BEGIN and COMMIT).
MAX_QUERIES = 16  # incl. BEGIN/COMMIT of the two transactions
# Incoming rate limit (1 script), the wait + user state (1 MGET), the send slot of the
# edited message (1 script); the callback answer takes no slot.
MAX_REDIS_ROUND_TRIPS = 3


def _menu_buttons(double) -> dict[str, str]:
    message = double.messages[(CHAT, double.last_message[CHAT])]
    return {
        button["text"]: button["callback_data"]
        for row in message["reply_markup"]["inline_keyboard"]
        for button in row
    }


def _press(double, bot, text: str) -> None:
    data = next(d for t, d in _menu_buttons(double).items() if text in t)
    update = double.callback(bot.token, CHAT, data, message_id=double.last_message[CHAT])
    (row,) = updates_record(bot_id=bot.pk, updates=[update])
    assert update_run(update_pk=row.pk) == "done"


@pytest.mark.django_db(transaction=True)
def test_a_warm_button_press_costs_a_bounded_number_of_queries_and_round_trips(
    demo_bot, double, monkeypatch, settings
):
    settings.TELEGRAM_CHAT_SEND_WINDOW_MS = 1  # no waiting for a chat slot in the count
    metrics.flush()
    monkeypatch.setattr(metrics, "_next_flush", float("inf"))  # no flush inside the count
    (row,) = updates_record(
        bot_id=demo_bot.pk, updates=[double.command(demo_bot.token, CHAT, "/start")]
    )
    assert update_run(update_pk=row.pk) == "done"
    _press(double, demo_bot, "Balance")  # warms the user's state, the wait, the version
    _press(double, demo_bot, "Back")

    with (
        CaptureQueriesContext(connection) as queries,
        redis_round_trips(monkeypatch) as trips,
    ):
        _press(double, demo_bot, "Balance")

    statements = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) <= MAX_QUERIES, "\n".join(statements)
    assert trips.count <= MAX_REDIS_ROUND_TRIPS, trips.count
    assert "Your balance" in double.messages[(CHAT, double.last_message[CHAT])]["text"]


@pytest.mark.django_db(transaction=True)
def test_a_wait_whose_cache_key_expired_mid_conversation_is_found_again(demo_bot, double, settings):
    """The waiting key is not rewritten while it names the same execution; if its TTL
    runs out, the next press reads the database and restores it."""
    from django.core.cache import cache

    from botplatform.cache import workflow_waiting_key
    from workflows.models import WorkflowExecution

    settings.TELEGRAM_CHAT_SEND_WINDOW_MS = 1
    (row,) = updates_record(
        bot_id=demo_bot.pk, updates=[double.command(demo_bot.token, CHAT, "/start")]
    )
    assert update_run(update_pk=row.pk) == "done"
    key = workflow_waiting_key(f"{demo_bot.pk}:{CHAT}")
    waiting = WorkflowExecution.objects.get(status="waiting")
    assert cache.get(key) == waiting.pk
    _press(double, demo_bot, "Balance")
    assert cache.get(key) == waiting.pk
    cache.delete(key)  # as if the 5-minute TTL ran out
    _press(double, demo_bot, "Back")
    assert cache.get(key) == waiting.pk
    _press(double, demo_bot, "History")
    assert "Your last operations" in double.messages[(CHAT, double.last_message[CHAT])]["text"]
    assert WorkflowExecution.objects.get(pk=waiting.pk).current_step == "history"


@pytest.mark.django_db(transaction=True)
def test_an_active_users_cached_state_does_not_expire_under_them(demo_bot, double, settings):
    """Each message restarts the state's TTLs (in the same round trip), so a user who
    writes every few seconds keeps hitting the cache past the 30-second profile TTL."""
    from django_redis import get_redis_connection

    from botplatform.cache import USER_PROFILE_TTL, user_profile_key, user_variables_key
    from users.models import BotUser

    settings.TELEGRAM_CHAT_SEND_WINDOW_MS = 1
    (row,) = updates_record(
        bot_id=demo_bot.pk, updates=[double.command(demo_bot.token, CHAT, "/start")]
    )
    assert update_run(update_pk=row.pk) == "done"
    user = BotUser.objects.get(telegram_id=CHAT)
    redis = get_redis_connection("default")
    profile = user_profile_key(user.pk, user.project_id)
    variables = user_variables_key(user.pk, user.project_id)
    _press(double, demo_bot, "Balance")  # caches the state
    redis.expire(profile, 2)  # as if cached 28 seconds ago
    redis.expire(variables, 2)
    before = metrics.totals().get('bp_cache_requests_total{family="user_state",result="hit"}', 0)
    _press(double, demo_bot, "Back")
    after = metrics.totals()['bp_cache_requests_total{family="user_state",result="hit"}']
    assert after == before + 1
    assert USER_PROFILE_TTL - 2 <= redis.ttl(profile) <= USER_PROFILE_TTL
    assert redis.ttl(variables) > 2
