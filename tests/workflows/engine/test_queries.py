"""Database work per message, counted (the target: 2-5 queries per incoming message)."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.workflows.conftest import buttons, command, press, publish, text, texts

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


def _count(func) -> tuple[object, list[str]]:
    with CaptureQueriesContext(connection) as queries:
        result = func()
    statements = [
        q["sql"]
        for q in queries.captured_queries
        if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))
    ]
    return result, statements


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
