"""Two events of one session at the same moment never both resume one wait."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from botplatform.conversation import InputEvent
from tests.factories import bot_user_create, project_create
from tests.workflows.conftest import buttons, command, publish
from workflows.models import ExecutionStepLog, WorkflowExecution
from workflows.services import event_process

Status = WorkflowExecution.Status


def run_concurrently(events, user, count=None):
    barrier = threading.Barrier(len(events))
    results, errors = [None] * len(events), []

    def worker(index, event):
        try:
            barrier.wait(timeout=10)
            results[index] = event_process(user=user, event=event)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i, e)) for i, e in enumerate(events)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    return results


@pytest.mark.django_db(transaction=True)
def test_double_tap_on_a_button_resumes_once():
    project = project_create()
    user = bot_user_create(project=project)
    publish(
        project,
        {
            "start": "menu",
            "steps": {
                "menu": {
                    "type": "message",
                    "text": "Menu",
                    "buttons": [[{"text": "Earn", "next": "count"}]],
                },
                "count": {
                    "type": "set_variable",
                    "variable": "presses",
                    "operation": "increment",
                    "value": 1,
                    "next": "done",
                },
                "done": {"type": "message", "text": "Counted"},
            },
        },
    )
    data = buttons(command(user, "start"))["Earn"].callback_data
    events = [
        InputEvent(kind="callback", callback_data=data, callback_query_id=f"q{i}", event_id=f"e{i}")
        for i in range(4)
    ]
    results = run_concurrently(events, user)
    stale = [r for r in results if r.actions[0].text == "This button is no longer active."]
    resumed = [r for r in results if any(getattr(a, "text", "") == "Counted" for a in r.actions)]
    assert len(resumed) == 1 and len(stale) == 3
    from users.models import UserVariable

    assert UserVariable.objects.get(user=user, key="presses").value == 1
    assert ExecutionStepLog.objects.filter(step="count").count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_answers_and_starts_are_processed_one_after_the_other():
    project = project_create()
    user = bot_user_create(project=project)
    publish(
        project,
        {
            "start": "ask",
            "steps": {
                "ask": {
                    "type": "input",
                    "text": "Number?",
                    "variable": "n",
                    "validate": {"type": "integer"},
                    "next": "ok",
                },
                "ok": {"type": "message", "text": "Got {{ vars.n }}"},
            },
        },
        triggers=[{"type": "command", "command": "start", "interrupt": True}],
    )
    # Several /start at once: without serialisation two would try to wait at once
    # and hit the one-waiting-per-session unique index.
    run_concurrently([InputEvent(kind="command", command="start") for _ in range(4)], user)
    assert WorkflowExecution.objects.filter(status=Status.WAITING).count() == 1
    assert WorkflowExecution.objects.filter(status=Status.CANCELLED).count() == 3
    # Two answers at once: exactly one answers the question; the other finds nothing waiting.
    results = run_concurrently([InputEvent(kind="text", text=str(i)) for i in (1, 2)], user)
    assert sorted(r.handled for r in results) == [False, True]
    assert WorkflowExecution.objects.filter(status=Status.COMPLETED).count() == 1
    assert ExecutionStepLog.objects.filter(step="ok").count() == 1
