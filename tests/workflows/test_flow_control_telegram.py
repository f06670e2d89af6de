"""Flow control through the Telegram path: call_workflow returns to the next step, a
bounded loop runs to its maximum, a random split reaches both variants (counted per
version); and publishing tells bounded loops from endless ones."""

from __future__ import annotations

import pytest

from tests.workflows.conftest import publish
from tests.workflows.tgpath import Chat, chat, double, tg_bot  # noqa: F401 (fixtures)
from users.models import UserVariable
from workflows.engine.validation import WorkflowValidationError, workflow_validate
from workflows.models import WorkflowExecution
from workflows.splits import split_reach

Status = WorkflowExecution.Status

CALLER = {
    "start": "before",
    "steps": {
        "before": {"type": "message", "text": "Before", "next": "call"},
        "call": {
            "type": "call_workflow",
            "workflow": "ask-name",
            "input": {"greeting": 'upper("hi")'},
            "output": {"got": "name"},
            "next": "after",
        },
        "after": {"type": "message", "text": "Back: {{ vars.got }} ({{ trigger.text }})"},
    },
}
SUB = {
    "start": "ask",
    "steps": {
        "ask": {
            "type": "input",
            "text": "{{ vars.greeting }}, your name?",
            "variable": "name",
            "next": "thanks",
        },
        "thanks": {"type": "message", "text": "Thanks, {{ vars.name }}"},
    },
}


def test_call_workflow_runs_the_sub_flow_and_comes_back(project, chat: Chat):  # noqa: F811
    publish(project, SUB, triggers=[], slug="ask-name")
    publish(project, CALLER, slug="caller")
    assert chat.say("/start deep") == ["Before", "HI, your name?"]
    caller = WorkflowExecution.objects.get(workflow__slug="caller")
    assert caller.status == Status.RUNNING and caller.context["pending"]["kind"] == "call"
    assert chat.say("Bob") == ["Thanks, Bob", "Back: Bob (deep)"]
    statuses = dict(WorkflowExecution.objects.values_list("workflow__slug", "status"))
    assert statuses == {"caller": Status.COMPLETED, "ask-name": Status.COMPLETED}
    assert UserVariable.objects.get(key="got").value == "Bob"


def test_a_cancelled_sub_flow_ends_its_caller_quietly(project, chat: Chat):  # noqa: F811
    buttons = {
        "start": "ask",
        "steps": {
            "ask": {
                "type": "message",
                "text": "Sure?",
                "buttons": [[{"text": "Yes", "next": "y"}]],
            },
            "y": {"type": "message", "text": "Yes"},
        },
    }
    publish(project, buttons, triggers=[], slug="ask-name")
    publish(project, CALLER, slug="caller")
    publish(
        project,
        {"start": "m", "steps": {"m": {"type": "message", "text": "Menu"}}},
        triggers=[{"type": "text", "text": "menu"}],
        slug="menu",
    )
    assert chat.say("/start") == ["Before", "Sure?"]
    assert chat.say("menu") == ["Menu"]  # the buttons' wait is replaced by "menu"
    statuses = dict(WorkflowExecution.objects.values_list("workflow__slug", "status"))
    assert statuses["ask-name"] == Status.CANCELLED
    assert statuses["caller"] == Status.CANCELLED
    caller = WorkflowExecution.objects.get(workflow__slug="caller")
    assert caller.error == "its sub-flow ended without returning"


def test_sub_flows_calling_themselves_stop_at_the_depth_limit(project, chat: Chat):  # noqa: F811
    publish(
        project,
        {
            "start": "count",
            "steps": {
                "count": {
                    "type": "set_variable",
                    "variable": "depth",
                    "operation": "increment",
                    "next": "again",
                },
                "again": {"type": "call_workflow", "workflow": "self", "next": "done"},
                "done": {"type": "message", "text": "unreachable in practice"},
            },
        },
        slug="self",
    )
    assert chat.say("/start") == [project.fallback_message]
    failed = WorkflowExecution.objects.get(status=Status.FAILED)
    assert "sub-flows are nested more than 5 deep" in failed.error
    assert UserVariable.objects.get(key="depth").value == 6
    assert not WorkflowExecution.objects.filter(status=Status.RUNNING).exists()


LOOP = {
    "start": "reset",
    "steps": {
        "reset": {"type": "set_variable", "variable": "n", "value": 0, "next": "inc"},
        "inc": {"type": "set_variable", "variable": "n", "operation": "increment", "next": "say"},
        "say": {"type": "message", "text": "round {{ vars.n }}", "next": "check"},
        "check": {
            "type": "condition",
            "branches": [{"if": "vars.n >= 3", "next": "done"}],
            "default": "inc",
        },
        "done": {"type": "message", "text": "done after {{ vars.n }}"},
    },
}


def test_a_bounded_loop_publishes_and_runs_to_its_maximum(project, chat: Chat):  # noqa: F811
    publish(project, LOOP)
    assert chat.say("/start") == ["round 1", "round 2", "round 3", "done after 3"]


def _problems(definition: dict) -> str:
    try:
        workflow_validate(definition)
    except WorkflowValidationError as exc:
        return str(exc)
    return ""


def _variant(**changes) -> dict:
    steps = {key: dict(value) for key, value in LOOP["steps"].items()}
    for key, value in changes.items():
        steps[key] = value
    return {"start": "reset", "steps": steps}


@pytest.mark.parametrize(
    "steps",
    [
        # no maximum: the condition checks something else
        {
            "check": {
                "type": "condition",
                "branches": [{"if": "vars.n == 3", "next": "done"}],
                "default": "inc",
            }
        },
        # the counter goes the wrong way for the check
        {"inc": {"type": "set_variable", "variable": "n", "operation": "decrement", "next": "say"}},
        # the counter is reset inside the loop
        {"say": {"type": "set_variable", "variable": "n", "value": 0, "next": "check"}},
        # an earlier branch stays in the loop, so the exit may never be tried
        {
            "check": {
                "type": "condition",
                "branches": [
                    {"if": "vars.n > 0", "next": "inc"},
                    {"if": "vars.n >= 3", "next": "done"},
                ],
                "default": "inc",
            }
        },
        # a templated step size could be zero or negative
        {
            "inc": {
                "type": "set_variable",
                "variable": "n",
                "operation": "increment",
                "value": "{{ vars.step }}",
                "next": "say",
            }
        },
    ],
)
def test_loops_without_a_real_bound_are_refused_with_advice(steps):
    problems = _problems(_variant(**steps))
    assert "would run forever" in problems
    assert "count the rounds" in problems and "vars.tries >= 3" in problems


def test_a_shorter_cycle_that_skips_the_check_is_refused():
    """say → inc → say never passes the condition: not bounded, even with a counter."""
    problems = _problems(
        _variant(
            say={
                "type": "condition",
                "branches": [{"if": "vars.n < 2", "next": "inc"}],
                "default": "check",
            }
        )
    )
    assert "would run forever" in problems


def test_the_bounded_loop_is_accepted():
    assert _problems(LOOP) == ""
    countdown = _variant(
        inc={"type": "set_variable", "variable": "n", "operation": "decrement", "next": "say"},
        check={
            "type": "condition",
            "branches": [{"if": "0 >= vars.n or vars.x", "next": "done"}],
            "default": "inc",
        },
    )
    assert _problems(countdown) == ""


SPLIT = {
    "start": "ab",
    "steps": {
        "ab": {
            "type": "random_split",
            "variants": [
                {"name": "A", "weight": 50, "next": "a"},
                {"name": "B", "weight": 50, "next": "b"},
            ],
        },
        "a": {"type": "message", "text": "Offer A"},
        "b": {"type": "message", "text": "Offer B"},
    },
}


def test_a_split_reaches_both_variants_and_counts_them_per_version(
    project,
    double,  # noqa: F811
    tg_bot,  # noqa: F811
):
    workflow = publish(project, SPLIT)
    offset: dict = {}
    seen: dict[str, list[int]] = {"Offer A": [], "Offer B": []}
    for chat_id in range(5001, 5041):
        chat = Chat(double=double, bot=tg_bot, chat_id=chat_id, offset=offset)  # noqa: F811
        [reply] = chat.say("/start")
        seen[reply].append(chat_id)
        assert chat.say("/start") == [reply]  # the same user gets the same variant
        if seen["Offer A"] and seen["Offer B"] and chat_id > 5010:
            break
    assert seen["Offer A"] and seen["Offer B"]
    reach = split_reach(version_id=workflow.published_version_id)
    assert reach == {"ab": {"A": 2 * len(seen["Offer A"]), "B": 2 * len(seen["Offer B"])}}
    # A new version counts from zero.
    SPLIT_V2 = {**SPLIT, "steps": {**SPLIT["steps"], "a": {"type": "message", "text": "New A"}}}
    workflow = publish(project, SPLIT_V2, slug="split-2", triggers=[])
    assert split_reach(version_id=workflow.published_version_id) == {}


def test_split_weights_are_checked_at_publish():
    bad = {
        **SPLIT,
        "steps": {
            **SPLIT["steps"],
            "ab": {
                "type": "random_split",
                "variants": [
                    {"name": "A", "weight": 0, "next": "a"},
                    {"name": "A", "weight": 5, "next": "b"},
                ],
            },
        },
    }
    problems = _problems(bad)
    assert "variant 2: the name 'A' is used twice" in problems or "weight" in problems


def test_a_sub_flow_that_waits_on_a_delay_returns_when_the_delay_ends(
    project,
    chat: Chat,  # noqa: F811
    django_capture_on_commit_callbacks,
):
    from workflows import tasks

    delayed = {
        "start": "wait",
        "steps": {
            "wait": {"type": "delay", "seconds": 3600, "next": "set"},
            "set": {"type": "set_variable", "variable": "name", "value": "later", "next": "end"},
            "end": {"type": "end"},
        },
    }
    publish(project, delayed, triggers=[], slug="ask-name")
    publish(project, CALLER, slug="caller")
    assert chat.say("/start") == ["Before"]
    before = len(chat.double.sent_texts(chat.bot.token, chat.chat_id))
    WorkflowExecution.objects.filter(workflow__slug="ask-name").update(
        wait_until="2000-01-01T00:00Z"
    )
    with django_capture_on_commit_callbacks(execute=True):
        tasks.executions_sweep()
    assert chat.since(before) == ["Back: later ()"]
    statuses = dict(WorkflowExecution.objects.values_list("workflow__slug", "status"))
    assert statuses == {"caller": Status.COMPLETED, "ask-name": Status.COMPLETED}


def test_a_caller_whose_sub_flow_never_returns_is_ended_by_the_sweep(project, chat: Chat):  # noqa: F811
    from workflows import tasks

    publish(project, SUB, triggers=[], slug="ask-name")
    publish(project, CALLER, slug="caller")
    chat.say("/start")
    # The sub-flow vanished without a word (e.g. replaced in bulk): the caller's long
    # deadline passes and the sweep ends it quietly.
    WorkflowExecution.objects.filter(workflow__slug="ask-name").update(status=Status.CANCELLED)
    WorkflowExecution.objects.filter(workflow__slug="caller").update(wait_until="2000-01-01T00:00Z")
    before = len(chat.double.sent_texts(chat.bot.token, chat.chat_id))
    tasks.executions_sweep()
    caller = WorkflowExecution.objects.get(workflow__slug="caller")
    assert caller.status == Status.COMPLETED and chat.since(before) == []


def test_the_versions_page_shows_each_variants_reach(project, chat: Chat, client):  # noqa: F811
    from django.urls import reverse

    from tests.admin.conftest import operator_create

    workflow = publish(project, SPLIT)
    [reply] = chat.say("/start")
    operator = operator_create("ann-split", project)
    client.force_login(operator)
    page = client.get(reverse("admin:workflows_workflow_versions", args=[workflow.pk]))
    name = "A" if reply == "Offer A" else "B"
    assert f"A/B “ab”: {name} 1</div>" in page.content.decode()
