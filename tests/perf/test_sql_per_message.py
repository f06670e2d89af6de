"""PostgreSQL per message on the paths real traffic takes: a poll that returns ONE
update (``runbot``'s usual case, a wave of one) and one webhook request.

Counted for a warm button press of the demo conversation, outside a test transaction:
the SQL statements (BEGIN and COMMIT of the one transaction counted apart) and the rows PostgreSQL wrote (inserted,
updated or deleted tuples, from ``pg_stat_user_tables`` once this backend's counters
are flushed). The bounds are the figures achieved (docs/performance.md, "PostgreSQL
per message"): a change that adds a statement or a tuple write fails here.
"""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from botplatform import metrics
from botplatform.models import TelegramUpdate
from botplatform.telegram.batch import update_record_polled, updates_run_batch
from botplatform.telegram.dispatch import update_run

CHAT = 778001

# One update per poll: record + claim (1: the worker that handles it records it,
# polling.BotPoller._record), bot + project versions + session lock (1: botcache),
# user (1), waiting execution (1), the one write (1), done + unlock (1). (Through the
# recorder, until 2 Dec: the claim apart, 7.)
MAX_POLL_STATEMENTS = 6
# The webhook: the bot's secret (1), then as above.
MAX_WEBHOOK_STATEMENTS = 7
# The journal row: inserted already claimed, handled (outbox), done (3); the
# execution's waiting state (1) and its step logs (2: the pressed step and the one
# shown). No last-seen stamp within USER_LAST_SEEN_RESOLUTION_SECONDS. (Before the
# wave of one: 11 statements + 4 transaction statements, 7 writes; the webhook 12 +
# 6, 7. Through the recorder: 7 writes.)
MAX_POLL_TUPLE_WRITES = 6
MAX_WEBHOOK_TUPLE_WRITES = 6


def tuple_writes() -> int:
    """Rows inserted, updated and deleted in this database so far, this backend's
    pending counters included (PostgreSQL 15+ flushes them when asked)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables"
        )
        return int(cursor.fetchone()[0])


def _poll(double, bot, update: dict) -> None:
    """What runbot's worker does with a poll that returned one update
    (``polling.BotPoller._run_direct``)."""
    left, row = update_record_polled(bot_id=bot.pk, update=update)
    assert left == []
    for pk in updates_run_batch(bot_id=bot.pk, rows=[row], claimed=True).leftovers:
        assert update_run(update_pk=pk) == "done"


def _warm(double, bot, send) -> None:
    send(double.command(bot.token, CHAT, "/start"))
    for text in ("Balance", "Back"):  # warms the user's state, the wait, the version
        send(double.press(bot.token, CHAT, text))


_TRANSACTION = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


def _measure(send, update: dict) -> tuple[list[str], int, int]:
    """(statements, transaction statements, tuple writes) of handling ``update``."""
    before = tuple_writes()
    with CaptureQueriesContext(connection) as queries:
        send(update)
    writes = tuple_writes() - before
    sql = [q["sql"] for q in queries.captured_queries]
    statements = [s for s in sql if not s.startswith(_TRANSACTION)]
    return statements, len(sql) - len(statements), writes


@pytest.fixture
def quiet(monkeypatch, settings, demo_bot):
    settings.TELEGRAM_CHAT_SEND_WINDOW_MS = 1  # no waiting for a chat slot in the count
    metrics.flush()
    monkeypatch.setattr(metrics, "_next_flush", float("inf"))  # no flush inside the count
    return demo_bot


@pytest.mark.django_db(transaction=True)
def test_one_update_per_poll_costs_a_wave_of_ones_statements_and_writes(double, quiet):
    bot = quiet

    def send(update: dict) -> None:
        _poll(double, bot, update)

    _warm(double, bot, send)
    statements, transactions, writes = _measure(send, double.press(bot.token, CHAT, "Balance"))
    print(f"{len(statements)} statements (+{transactions} BEGIN/COMMIT), {writes} tuple writes")

    assert len(statements) <= MAX_POLL_STATEMENTS, "\n".join(statements)
    assert transactions <= 2  # one transaction
    assert writes <= MAX_POLL_TUPLE_WRITES, writes
    assert "Your balance" in double.messages[(CHAT, double.last_message[CHAT])]["text"]
    assert set(TelegramUpdate.objects.values_list("status", "attempts", "claimed_at")) == {
        (TelegramUpdate.Status.DONE, 1, None)
    }


@pytest.mark.django_db(transaction=True)
def test_a_webhook_request_costs_as_little_as_a_poll_of_one(client, double, quiet):
    bot = quiet
    url = reverse("telegram_webhook", kwargs={"bot_id": bot.pk})

    def send(update: dict) -> None:
        response = client.post(
            url,
            data=json.dumps(update),
            content_type="application/json",
            HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN=bot.webhook_secret,
        )
        assert response.status_code == 200

    _warm(double, bot, send)
    statements, transactions, writes = _measure(send, double.press(bot.token, CHAT, "Balance"))
    print(f"{len(statements)} statements (+{transactions} BEGIN/COMMIT), {writes} tuple writes")

    assert len(statements) <= MAX_WEBHOOK_STATEMENTS, "\n".join(statements)
    assert transactions <= 2  # one transaction
    assert writes <= MAX_WEBHOOK_TUPLE_WRITES, writes
    assert "Your balance" in double.messages[(CHAT, double.last_message[CHAT])]["text"]
    assert set(TelegramUpdate.objects.values_list("status", "attempts", "claimed_at")) == {
        (TelegramUpdate.Status.DONE, 1, None)
    }
