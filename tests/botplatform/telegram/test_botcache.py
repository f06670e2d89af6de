"""The wave's bot and project: loaded once per process, checked by one statement."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from botplatform.locks import sessions_lock_sql
from botplatform.models import Bot, Project
from botplatform.telegram.botcache import bot_for_wave, bots_forget
from tests.factories import bot_create
from tests.users.helpers import other_connection

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _cold():
    bots_forget()
    yield
    bots_forget()


def _wave(bot_id: int, locks=None) -> tuple[Bot, int]:
    """bot_for_wave in a transaction, as a wave runs it; (bot, statements)."""
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        bot = bot_for_wave(bot_id, locks)
    statements = [q for q in queries.captured_queries if q["sql"] not in ("BEGIN", "COMMIT")]
    return bot, len(statements)


def _other_connection_execute(sql: str, params: list) -> None:
    """A change made outside this process's ORM (another process, a psql session)."""
    with other_connection() as other:
        other.execute(sql, params)


def test_a_warm_bot_is_one_statement_and_the_same_objects():
    bot = bot_create()
    first, cold = _wave(bot.pk)
    second, warm = _wave(bot.pk)
    assert (cold, warm) == (2, 1)
    assert second is first
    assert (second.token, second.project.name) == (bot.token, bot.project.name)


def test_a_change_to_the_project_made_anywhere_is_seen_by_the_next_wave():
    bot = bot_create()
    _wave(bot.pk)
    # A queryset update touches no updated_at; the row version still moves.
    Project.objects.filter(pk=bot.project_id).update(user_rate_limit_per_minute=7)
    changed, statements = _wave(bot.pk)
    assert (changed.project.user_rate_limit_per_minute, statements) == (7, 2)
    table = connection.ops.quote_name(Project._meta.db_table)
    _other_connection_execute(
        f"UPDATE {table} SET user_rate_limit_per_minute = 9 WHERE id = %s",
        [bot.project_id],
    )
    assert _wave(bot.pk)[0].project.user_rate_limit_per_minute == 9


def test_a_new_token_is_seen_by_the_next_wave():
    bot = bot_create()
    _wave(bot.pk)
    bot.token = "123456:" + "N" * 35
    bot.save(update_fields=["token"])
    assert _wave(bot.pk)[0].token == bot.token


def test_the_conversation_locks_are_taken_in_the_same_statement():
    bot = bot_create()
    locks = sessions_lock_sql(["bot:1:chat:5", "bot:1:chat:6"])
    for _ in range(2):  # cold and warm
        with transaction.atomic(), CaptureQueriesContext(connection) as queries:
            bot_for_wave(bot.pk, locks)
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                    " AND pid = pg_backend_pid()"
                )
                held = cursor.fetchone()[0]
        assert held == 2
        sql = [q["sql"] for q in queries.captured_queries if q["sql"] not in ("BEGIN", "COMMIT")]
        assert "pg_advisory_xact_lock" in sql[0] and "xmin" in sql[0]


def test_a_deleted_bot_raises_does_not_exist():
    bot = bot_create()
    _wave(bot.pk)
    Bot.objects.filter(pk=bot.pk).delete()
    with pytest.raises(Bot.DoesNotExist):
        _wave(bot.pk)
