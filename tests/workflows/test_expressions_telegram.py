"""Expressions end to end through the Telegram path (the Bot API double, the journal,
dispatch, the engine, the sender): the onboarding computes an age, the rewards flow
shows "balance after", and hostile values stay bounded and readable."""

from __future__ import annotations

import time
from datetime import date, timedelta

from django.utils import timezone

from tests.workflows.conftest import publish
from tests.workflows.tgpath import Chat, chat, double, tg_bot  # noqa: F401 (fixtures)
from users.ledger import bonus_earn
from users.models import BotUser, UserVariable
from users.variables import user_variable_set
from workflows.models import WorkflowExecution

ONBOARDING = {
    "start": "ask",
    "steps": {
        "ask": {
            "type": "input",
            "text": "Your birthday?",
            "variable": "birthday",
            "validate": {"type": "date", "max": "today"},
            "next": "age",
        },
        "age": {
            "type": "set_variable",
            "variable": "age",
            "operation": "calculate",
            "value": "age(vars.birthday)",
            "next": "check",
        },
        "check": {
            "type": "condition",
            "branches": [{"if": "vars.age >= 18 and vars.birthday < today()", "next": "adult"}],
            "default": "young",
        },
        "adult": {
            "type": "message",
            "text": "You are {{ vars.age }}; in a week it is {{ date_add(today(), 7) }}.",
        },
        "young": {"type": "message", "text": "Only {{ vars.age }}, {{ upper(vars.name) }}"},
    },
}

REWARDS = {
    "start": "price",
    "steps": {
        "price": {
            "type": "input",
            "text": "Price?",
            "variable": "price",
            "validate": {"type": "number"},
            "next": "after",
        },
        "after": {
            "type": "set_variable",
            "variable": "after",
            "operation": "calculate",
            "value": "user.balance - round(vars.price * 0.9, 2)",
            "next": "show",
        },
        "show": {
            "type": "message",
            "text": "With 10% off: {{ vars.price * 0.9 | number:2 }}; "
            "balance after: {{ vars.after }} ({{ replace(vars.code, '#', '') }})",
        },
    },
}


def _age(born) -> int:
    today = timezone.localdate()
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def test_the_onboarding_computes_an_age(project, chat: Chat):  # noqa: F811
    publish(project, ONBOARDING)
    assert chat.say("/start") == ["Your birthday?"]
    reply = chat.say("15.06.1990")
    expected_week = (timezone.localdate() + timedelta(days=7)).isoformat()
    assert reply == [f"You are {_age(date(1990, 6, 15))}; in a week it is {expected_week}."]
    variable = UserVariable.objects.get(key="age")
    assert variable.value == _age(date(1990, 6, 15))  # a number, not a text


def test_the_rewards_flow_shows_balance_after(
    project,
    chat: Chat,  # noqa: F811
    django_capture_on_commit_callbacks,
):
    publish(project, REWARDS)
    chat.say("/start")
    user = BotUser.objects.get(telegram_id=chat.chat_id)
    with django_capture_on_commit_callbacks(execute=True):  # the cached state follows
        bonus_earn(user_id=user.pk, amount=500, idempotency_key="fund")
        user_variable_set(user_id=user.pk, project_id=project.pk, key="code", value="#A12")
    assert chat.say("123,45") == ["With 10% off: 111.11; balance after: 388.89 (A12)"]
    assert UserVariable.objects.get(user=user, key="after").value == 388.89


def test_hostile_values_through_the_telegram_path_stay_bounded(project, chat: Chat):  # noqa: F811
    """A huge number, NUL and odd Unicode typed by the user: nothing crashes, fast."""
    publish(
        project,
        {
            "start": "ask",
            "steps": {
                "ask": {"type": "input", "text": "?", "variable": "x", "next": "calc"},
                "calc": {
                    "type": "set_variable",
                    "variable": "y",
                    "operation": "calculate",
                    "value": "vars.x * vars.x * 1000000000000000",
                    "next": "show",
                },
                "show": {
                    "type": "message",
                    "text": "[{{ vars.y }}] [{{ length(vars.x) }}] [{{ upper(vars.x) }}]",
                },
            },
        },
    )
    for answer, shown in [
        ("9" * 29, "[] [29] [" + "9" * 29 + "]"),  # the product passes 10^30: no value
        ("1e99999999", "[] [10] [1E99999999]"),  # never turned into a giant integer
        ("ß\u202e\ufeff", "[] [3] [SS\u202e\ufeff]"),
    ]:
        chat.say("/start")
        started = time.perf_counter()
        assert chat.say(answer) == [shown]
        assert time.perf_counter() - started < 5
    assert not WorkflowExecution.objects.filter(status="failed").exists()


def test_a_runaway_calculation_fails_the_step_with_a_clear_error(project, chat: Chat):  # noqa: F811
    """replace() that would build a huge text is refused before it is built."""
    publish(
        project,
        {
            "start": "ask",
            "steps": {
                "ask": {"type": "input", "text": "?", "variable": "x", "next": "calc"},
                "calc": {
                    "type": "set_variable",
                    "variable": "y",
                    "operation": "calculate",
                    "value": "replace(replace(vars.x, 'a', vars.x), 'a', vars.x)",
                    "next": "show",
                },
                "show": {"type": "message", "text": "{{ vars.y }}"},
            },
        },
    )
    chat.say("/start")
    started = time.perf_counter()
    assert chat.say("a" * 900) == [project.fallback_message]
    assert time.perf_counter() - started < 5
    execution = WorkflowExecution.objects.get()
    assert execution.status == "failed"
    assert "the result would be longer than 20000 characters" in execution.error


def test_a_regex_trigger_hands_its_captures_to_the_conversation(project, chat: Chat):  # noqa: F811
    publish(
        project,
        {
            "start": "show",
            "steps": {
                "show": {
                    "type": "message",
                    "text": "Order {{ trigger.match.1 }} ({{ trigger.match.kind }}), "
                    "you wrote {{ trigger.text }}; next {{ trigger.match.1 + 1 }}",
                }
            },
        },
        triggers=[{"type": "regex", "pattern": r"order\s+#?(\d+)(?P<kind>[a-z]*)"}],
    )
    assert chat.say("Where is order #1041x?") == [
        "Order 1041 (x), you wrote Where is order #1041x?; next 1042"
    ]
