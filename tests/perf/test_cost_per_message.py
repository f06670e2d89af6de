"""What one warm message costs: SQL statements and Redis round trips, counted.

The figures asserted are the ones achieved (docs/performance.md): a regression that
adds a query or a round trip to the hot path fails here, without any timing.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from botplatform import metrics
from botplatform.telegram.dispatch import update_run
from botplatform.telegram.journal import updates_record
from tests.users.helpers import redis_round_trips

CHAT = 777001

# Measured with the demo conversation, warm caches, outside a test transaction
# (each of the two transactions counts its BEGIN and COMMIT).
MAX_QUERIES = 13  # incl. BEGIN/COMMIT of the two transactions
# The incoming rate limit and the edited message's send slot (1 script: the slot is
# taken with the check), the wait + user state (1 MGET); the callback answer takes no
# slot. Commands inside scripts: tests/perf/test_redis_commands.py.
MAX_REDIS_ROUND_TRIPS = 2


def _press(double, bot, text: str) -> None:
    (row,) = updates_record(bot_id=bot.pk, updates=[double.press(bot.token, CHAT, text)])
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
def test_an_active_users_cached_state_reloads_once_per_ttl_and_reads_never_touch_it(
    demo_bot, double, settings
):
    """Reads cost one MGET and no EXPIRE (no sliding expiry): the state's TTL runs
    from its load. When it runs out, the next message loads it once and caches it
    again for the full TTL."""
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
    redis.expire(profile, 50)  # as if cached a while ago
    redis.expire(variables, 50)
    hits = 'bp_cache_requests_total{family="user_state",result="hit"}'
    before = metrics.totals().get(hits, 0)
    _press(double, demo_bot, "Back")
    assert metrics.totals()[hits] == before + 1
    assert redis.ttl(profile) <= 50 and redis.ttl(variables) <= 50  # a read renews nothing
    redis.delete(profile)  # the TTL ran out
    _press(double, demo_bot, "Balance")
    assert metrics.totals()[hits] == before + 1  # one miss: loaded from the database
    assert USER_PROFILE_TTL - 2 <= redis.ttl(profile) <= USER_PROFILE_TTL


# runbot's batch path (botplatform/telegram/batch.py), ten chats pressing a button at
# once: the statements of the whole batch, BEGIN and COMMIT included, and its Redis
# round trips (the state read-ahead and every rate limit and send slot of the batch:
# one script call).
BATCH = 10
MAX_BATCH_QUERIES = 10
MAX_BATCH_REDIS_ROUND_TRIPS = 1


@pytest.mark.django_db(transaction=True)
def test_a_warm_batch_costs_about_one_statement_per_message(
    demo_bot, double, monkeypatch, settings
):
    from botplatform.telegram.batch import updates_run_batch

    settings.TELEGRAM_CHAT_SEND_WINDOW_MS = 1
    demo_bot.project.bot_send_rate_per_second = 1000
    demo_bot.project.save(update_fields=["bot_send_rate_per_second"])
    metrics.flush()
    monkeypatch.setattr(metrics, "_next_flush", float("inf"))
    chats = [CHAT + i for i in range(BATCH)]

    def press_all(text: str) -> list:
        return [double.press(demo_bot.token, chat, text) for chat in chats]

    rows = updates_record(
        bot_id=demo_bot.pk,
        updates=[double.command(demo_bot.token, chat, "/start") for chat in chats],
    )
    assert updates_run_batch(bot_id=demo_bot.pk, rows=rows).leftovers == []
    for text in ("Balance", "Back"):  # warms every user's state, wait and version
        rows = updates_record(bot_id=demo_bot.pk, updates=press_all(text))
        assert updates_run_batch(bot_id=demo_bot.pk, rows=rows).leftovers == []

    updates = press_all("Balance")
    with (
        CaptureQueriesContext(connection) as queries,
        redis_round_trips(monkeypatch) as trips,
    ):
        rows = updates_record(bot_id=demo_bot.pk, updates=updates)
        result = updates_run_batch(bot_id=demo_bot.pk, rows=rows)

    assert result.leftovers == [] and result.handled == BATCH
    statements = [q["sql"] for q in queries.captured_queries]
    assert len(statements) <= MAX_BATCH_QUERIES, "\n".join(statements)
    assert trips.count <= MAX_BATCH_REDIS_ROUND_TRIPS, trips.count
    for chat in chats:
        assert "Your balance" in double.messages[(chat, double.last_message[chat])]["text"]
