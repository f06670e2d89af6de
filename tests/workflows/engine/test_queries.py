"""Database work per message, counted (the target: 2-5 queries per incoming message)."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.workflows.conftest import buttons, command, press, publish, text, texts
from users.models import BonusTransaction

MENU = {
    "start": "menu",
    "steps": {
        "menu": {
            "type": "message",
            "text": "Hi {{ user.first_name }}, {{ user.balance }} bonuses",
            "buttons": [[{"text": "Balance", "next": "balance"}]],
        },
        "balance": {
            "type": "message",
            "text": "{{ user.balance }} bonuses",
            "buttons": [[{"text": "Back", "next": "menu"}]],
        },
    },
}


def _count(func, savepoints: list[str] | None = None) -> tuple[object, list[str]]:
    """(result, statements); the SAVEPOINT statements go to ``savepoints`` if given."""
    with CaptureQueriesContext(connection) as queries:
        result = func()
    sql = [q["sql"] for q in queries.captured_queries]
    if savepoints is not None:
        savepoints += [s for s in sql if s.startswith("SAVEPOINT")]
    return result, [s for s in sql if not s.startswith(("SAVEPOINT", "RELEASE"))]


def test_a_button_press_costs_four_queries_with_a_warm_cache(project, user):
    publish(project, MENU)
    shown = buttons(command(user, "start"))  # warms the user state and version caches
    result, statements = _count(lambda: press(user, shown["Balance"]))
    assert texts(result) == ["0 bonuses"]
    # session lock, the waiting row (locked), the execution update, the step log
    assert len(statements) == 4, statements


def test_a_text_nobody_waits_for_costs_one_query(project, user):
    publish(project, MENU)
    text(user, "hello")  # caches "nothing waits" for the session
    result, statements = _count(lambda: text(user, "hello again"))
    assert result.handled is False
    # the session lock; the cache says nothing waits and holds the trigger table
    assert len(statements) == 1, statements


SHOP = {
    "start": "menu",
    "steps": {
        "menu": {
            "type": "message",
            "text": "{{ user.balance }} bonuses",
            "buttons": [[{"text": "Spend", "next": "spend"}, {"text": "Look", "next": "look"}]],
        },
        "spend": {
            "type": "bonus",
            "operation": "spend",
            "amount": 10,
            "on_success": "look",
            "on_insufficient": "look",
            "on_in_progress": "look",
        },
        "look": {"type": "message", "text": "{{ user.balance }} bonuses"},
    },
}


def test_a_spend_press_costs_one_statement_and_no_round_trip_more(project, user, monkeypatch):
    """The spend itself is one statement (PostgreSQL, users.ledger) and no Redis command:
    a press that spends costs the plain press's statements plus that one, no savepoint
    more (the bonus step takes none around a one-statement spend) and the same Redis
    round trips."""
    from tests.users.helpers import redis_round_trips
    from users.ledger import bonus_earn

    bonus_earn(user_id=user.pk, amount=100, idempotency_key="fund")
    publish(project, SHOP)
    command(user, "start")  # warms the user state and version caches
    shown = buttons(command(user, "start"))
    look_savepoints: list[str] = []
    spend_savepoints: list[str] = []
    with redis_round_trips(monkeypatch) as looking:
        _, look = _count(lambda: press(user, shown["Look"]), look_savepoints)
    shown = buttons(command(user, "start"))
    with redis_round_trips(monkeypatch) as spending:
        result, spend = _count(lambda: press(user, shown["Spend"]), spend_savepoints)
    assert texts(result) == ["90 bonuses"]
    assert BonusTransaction.objects.get(kind="spend").balance_after == 90
    # session lock, the waiting row (locked), the spend, the execution update, the step log
    assert len(spend) == 5, spend
    assert len(spend) == len(look) + 1, (spend, look)
    ledger_statements = [s for s in spend if "users_botuser" in s or "users_bonustransaction" in s]
    assert len(ledger_statements) == 1 and "pg_try_advisory_xact_lock" in ledger_statements[0]
    assert spending.count == looking.count
    assert len(spend_savepoints) == len(look_savepoints), (spend_savepoints, look_savepoints)
