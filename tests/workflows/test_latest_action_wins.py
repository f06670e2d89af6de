"""Who wins when a user does two things at once (docs/workflows.md).

Each test replays a scenario of issue 12 through the services: a conversation paused
on a delay or an HTTP request, and a newer conversation the user started meanwhile.
"""

from __future__ import annotations

import pytest

from botplatform.conversation import AnswerCallback
from tests.workflows.conftest import buttons, command, press, publish, text, texts
from tests.workflows.test_tasks import delivered_texts, make_due
from workflows import services, tasks
from workflows.engine.execution import SUPERSEDED
from workflows.models import WorkflowExecution

Status = WorkflowExecution.Status

MENU = {
    "start": "menu",
    "steps": {
        "menu": {
            "type": "message",
            "text": "Menu",
            "buttons": [[{"text": "Balance", "next": "balance"}]],
        },
        "balance": {"type": "message", "text": "{{ user.balance }} bonuses"},
    },
}
MENU_TRIGGERS = [
    {"type": "command", "command": "start", "interrupt": True},
    {"type": "text", "text": "Menu"},
]
ASK = {
    "type": "input",
    "text": "How many pizzas?",
    "variable": "pizzas",
    "next": "thanks",
}
ORDER_DELAY = {
    "start": "wait",
    "steps": {
        "wait": {"type": "delay", "seconds": 30, "next": "ask"},
        "ask": ASK,
        "thanks": {"type": "message", "text": "{{ vars.pizzas }} pizzas ordered"},
    },
}
ORDER_HTTP = {
    "start": "lookup",
    "steps": {
        "lookup": {
            "type": "http_request",
            "url": "http://127.0.0.1:9/menu",  # the discard port: refused at once
            "timeout": 1,
            "retries": 0,
            "on_success": "ask",
            "on_failure": "ask",
        },
        "ask": ASK,
        "thanks": {"type": "message", "text": "{{ vars.pizzas }} pizzas ordered"},
    },
}
ORDER_TRIGGERS = [{"type": "command", "command": "order"}]


@pytest.fixture
def pizzeria(project):
    project.allow_private_http = True
    project.save(update_fields=["allow_private_http"])
    publish(project, MENU, triggers=MENU_TRIGGERS, slug="menu")
    return project


def _order(project, definition) -> None:
    publish(project, definition, triggers=ORDER_TRIGGERS, slug="order")


def _paused(user) -> WorkflowExecution:
    return WorkflowExecution.objects.get(user=user, workflow__slug="order", status=Status.RUNNING)


def _balance_works(user, menu_buttons, bot) -> None:
    result = press(user, menu_buttons["Balance"], bot=bot, query_id="balance")
    assert texts(result) == [f"{user.balance} bonuses"]
    assert not any(isinstance(a, AnswerCallback) and a.text for a in result.actions)


def test_start_during_a_delay_cancels_the_delayed_order_and_the_menu_stays_active(
    pizzeria, user, bot, delivered
):
    _order(pizzeria, ORDER_DELAY)
    command(user, "order", bot=bot)
    order = _paused(user)
    menu = buttons(command(user, "start", bot=bot))

    order.refresh_from_db()
    assert order.status == Status.CANCELLED
    assert order.error == "interrupted: the user started 'menu'"
    assert "pending" not in order.context and order.wait_until is None
    # The delay's task (and a retry of it, and the sweep) find nothing to continue.
    make_due(order.pk)
    tasks.delay_continue(order.pk, 1)
    tasks.delay_continue(order.pk, 1)
    assert tasks.executions_sweep() == {"expired": 0, "overdue": 0}
    assert delivered == []
    _balance_works(user, menu, bot)


def test_start_while_an_http_request_is_pending_cancels_it_before_and_after_the_request(
    pizzeria, user, bot, delivered, django_capture_on_commit_callbacks
):
    _order(pizzeria, ORDER_HTTP)
    with django_capture_on_commit_callbacks(execute=False):  # the worker is slow today
        command(user, "order", bot=bot)
    order = _paused(user)
    seq = order.context["pending"]["seq"]
    menu = buttons(command(user, "start", bot=bot))

    # The queued request runs late: it is not even sent.
    tasks.http_request_run(order.pk, seq)
    # A worker that had already sent it hands in its result: it is dropped.
    assert not services.execution_timer_fire(
        execution_id=order.pk, seq=seq, data={"ok": True, "status": 200}, force=True
    )
    assert delivered == []
    order.refresh_from_db()
    assert order.status == Status.CANCELLED
    _balance_works(user, menu, bot)


def test_a_continuation_after_the_user_started_something_else_ends_quietly(
    pizzeria, user, bot, delivered
):
    _order(pizzeria, ORDER_DELAY)
    # Still the newest unfinished conversation: the order continues and asks.
    command(user, "order", bot=bot)
    first = _paused(user)
    make_due(first.pk)
    tasks.delay_continue(first.pk, 1)
    assert delivered_texts(delivered) == ["How many pizzas?"]
    assert texts(text(user, "2", bot=bot)) == ["2 pizzas ordered"]
    delivered.clear()

    # "Menu" is not an interrupting trigger: the new order's delay keeps running ...
    command(user, "order", bot=bot)
    order = _paused(user)
    menu = buttons(text(user, "Menu", bot=bot))
    assert _paused(user) == order
    # ... but when it ends, the menu (newer, waiting) keeps the chat.
    make_due(order.pk)
    assert not services.execution_timer_fire(execution_id=order.pk, seq=1)
    assert delivered == []
    order.refresh_from_db()
    assert (order.status, order.error) == (Status.CANCELLED, SUPERSEDED)
    tasks.delay_continue(order.pk, 1)  # a retried task: still nothing
    assert delivered == []
    _balance_works(user, menu, bot)


def test_the_same_trigger_twice_during_a_delay_asks_the_question_once(user, project, delivered):
    _order(project, ORDER_DELAY)
    command(user, "order")
    command(user, "order")
    first, second = WorkflowExecution.objects.filter(status=Status.RUNNING).order_by("pk")
    make_due(first.pk)
    make_due(second.pk)

    assert tasks.executions_sweep() == {"expired": 0, "overdue": 2}
    tasks.executions_sweep()

    assert delivered_texts(delivered) == ["How many pizzas?"]
    first.refresh_from_db()
    assert (first.status, first.error) == (Status.CANCELLED, SUPERSEDED)
    # The answer goes to the one question asked.
    assert texts(text(user, "3")) == ["3 pizzas ordered"]
    second.refresh_from_db()
    assert second.status == Status.COMPLETED


def test_a_timeout_of_an_older_conversation_does_not_take_the_chat_from_a_newer_one(
    user, project, delivered
):
    # A question with a timeout; a level-up (started by its bonus) pauses on a delay.
    publish(
        project,
        {
            "start": "earn",
            "steps": {
                "earn": {"type": "bonus", "operation": "earn", "amount": 500, "next": "ask"},
                "ask": {**ASK, "timeout": 60, "on_timeout": "late"},
                "thanks": {"type": "end"},
                "late": {"type": "message", "text": "Too slow"},
            },
        },
    )
    project.levels = [{"name": "Bronze", "threshold": 0}, {"name": "Gold", "threshold": 100}]
    project.save(update_fields=["levels"])
    publish(
        project,
        {
            "start": "wait",
            "steps": {
                "wait": {"type": "delay", "seconds": 30, "next": "hello"},
                "hello": {"type": "message", "text": "Welcome to Gold"},
            },
        },
        triggers=[{"type": "level_up"}],
    )
    assert texts(command(user, "start")) == ["How many pizzas?"]
    asking = WorkflowExecution.objects.get(status=Status.WAITING)
    level_up = WorkflowExecution.objects.get(status=Status.RUNNING)
    assert level_up.pk > asking.pk

    make_due(asking.pk)
    tasks.executions_sweep()

    asking.refresh_from_db()
    assert (asking.status, asking.error) == (Status.CANCELLED, SUPERSEDED)
    assert delivered == []
    make_due(level_up.pk)
    tasks.executions_sweep()
    assert delivered_texts(delivered) == ["Welcome to Gold"]


@pytest.mark.django_db(transaction=True)
def test_a_continuation_waits_for_a_start_in_progress_and_then_yields_to_it(
    pizzeria, user, bot, delivered
):
    """The rule is decided under the session lock: a delay ending while the user's
    "Menu" is being handled (not committed yet) waits for it, then sees it."""
    import threading

    from django.db import connection, transaction

    _order(pizzeria, ORDER_DELAY)
    command(user, "order", bot=bot)
    order = _paused(user)
    make_due(order.pk)
    menu_started, release = threading.Event(), threading.Event()
    outcome: dict = {}

    def open_menu() -> None:
        try:
            with transaction.atomic():
                outcome["menu"] = buttons(text(user, "Menu", bot=bot))
                menu_started.set()
                release.wait(10)
        finally:
            connection.close()

    def delay_ends() -> None:
        try:
            outcome["fired"] = services.execution_timer_fire(execution_id=order.pk, seq=1)
        finally:
            connection.close()

    menu = threading.Thread(target=open_menu)
    menu.start()
    assert menu_started.wait(10)
    timer = threading.Thread(target=delay_ends)
    timer.start()
    timer.join(0.5)
    assert timer.is_alive()  # blocked on the session lock the menu's transaction holds
    release.set()
    menu.join(10)
    timer.join(10)

    assert outcome["fired"] is False
    order.refresh_from_db()
    assert (order.status, order.error) == (Status.CANCELLED, SUPERSEDED)
    assert delivered == []
    _balance_works(user, outcome["menu"], bot)


def test_a_request_of_a_conversation_the_user_moved_on_from_is_not_sent(
    pizzeria, user, bot, delivered, django_capture_on_commit_callbacks
):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    calls: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            calls.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        definition = {**ORDER_HTTP, "steps": dict(ORDER_HTTP["steps"])}
        definition["steps"]["lookup"] = {
            **ORDER_HTTP["steps"]["lookup"],
            "url": f"http://127.0.0.1:{server.server_address[1]}/place-order",
        }
        _order(pizzeria, definition)
        with django_capture_on_commit_callbacks(execute=False):  # the worker is slow
            command(user, "order", bot=bot)
        order = _paused(user)
        menu = buttons(text(user, "Menu", bot=bot))  # not interrupting

        tasks.http_request_run(order.pk, order.context["pending"]["seq"])
    finally:
        server.shutdown()

    assert calls == []
    order.refresh_from_db()
    assert (order.status, order.error) == (Status.CANCELLED, SUPERSEDED)
    assert tasks.executions_sweep() == {"expired": 0, "overdue": 0}
    assert delivered == []
    _balance_works(user, menu, bot)
