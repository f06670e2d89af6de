"""Issue 12, item 6, through the Bot API double: a delayed conversation and the menu.

The demo bot gets an "order" workflow that waits 30 s and then asks a question. The
user's updates go through the journal and dispatch; the delay is continued by the
periodic sweep, which sends through the real Telegram sender to the double.
"""

from __future__ import annotations

import pytest

from botplatform.telegram.client import api
from botplatform.telegram.dispatch import update_run
from botplatform.telegram.journal import updates_record
from tests.botplatform.telegram.test_batch import demo_bot  # noqa: F401  (fixture)
from tests.workflows.conftest import publish
from workflows import tasks
from workflows.models import WorkflowExecution

CHAT = 9301
ORDER = {
    "start": "wait",
    "steps": {
        "wait": {"type": "delay", "seconds": 30, "next": "ask"},
        "ask": {
            "type": "input",
            "text": "How many pizzas?",
            "variable": "pizzas",
            "next": "thanks",
        },
        "thanks": {"type": "message", "text": "{{ vars.pizzas }} pizzas ordered"},
    },
}


@pytest.fixture
def pizzeria(demo_bot):  # noqa: F811
    publish(
        demo_bot.project, ORDER, triggers=[{"type": "command", "command": "order"}], slug="order"
    )
    return demo_bot


def _handle(double, bot, offset: dict) -> None:
    """What runbot does with one getUpdates answer, one update at a time."""
    updates = api().get_updates(bot.token, offset=offset.get("next"), limit=100)
    offset["next"] = max(u["update_id"] for u in updates) + 1
    for row in updates_record(bot_id=bot.pk, updates=updates):
        assert update_run(update_pk=row.pk) == "done"


def _delays_end() -> None:
    """Every paused conversation is due now; the periodic sweep runs (twice: a retry)."""
    WorkflowExecution.objects.filter(status="running").update(wait_until="2000-01-01T00:00Z")
    tasks.executions_sweep()
    tasks.executions_sweep()


def test_order_then_start_the_menu_stays_active_when_the_delay_ends(double, pizzeria):
    offset: dict = {}
    double.command(pizzeria.token, CHAT, "/order")
    double.command(pizzeria.token, CHAT, "/start")
    _handle(double, pizzeria, offset)

    double.press(pizzeria.token, CHAT, "Balance")  # on the menu; handled after the delay
    _delays_end()
    _handle(double, pizzeria, offset)
    answers = double.calls_of("answerCallbackQuery", pizzeria.token)
    assert [a.params.get("text") for a in answers] == [
        None
    ]  # not "This button is no longer active"
    assert "How many pizzas?" not in double.sent_texts(pizzeria.token, CHAT)
    order = WorkflowExecution.objects.get(workflow__slug="order")
    assert (order.status, order.error) == ("cancelled", "interrupted: the user started 'main-menu'")


def test_order_twice_during_the_delay_asks_once(double, pizzeria):
    offset: dict = {}
    double.command(pizzeria.token, CHAT, "/order")
    double.command(pizzeria.token, CHAT, "/order")
    _handle(double, pizzeria, offset)

    _delays_end()

    assert double.sent_texts(pizzeria.token, CHAT).count("How many pizzas?") == 1
    double.command(pizzeria.token, CHAT, "2")
    _handle(double, pizzeria, offset)
    assert double.sent_texts(pizzeria.token, CHAT)[-1] == "2 pizzas ordered"


def test_a_group_conversation_continues_in_the_group_after_the_member_wrote_privately(
    double, pizzeria
):
    from tests.botplatform.telegram.test_group_sessions import ANN, GROUP, _group_command

    offset: dict = {}
    _group_command(double, pizzeria.token, ANN, "/order")
    double.command(pizzeria.token, ANN, "/start")  # her private chat: another session
    _handle(double, pizzeria, offset)

    _delays_end()

    assert double.sent_texts(pizzeria.token, GROUP) == ["How many pizzas?"]
    assert "How many pizzas?" not in double.sent_texts(pizzeria.token, ANN)
