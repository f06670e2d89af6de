"""Precise timers (workflows/timers.py): the poller fires due waits and delays at once,
exactly once under concurrent pollers, and from the database after a restart."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from botplatform.periodic import TimerLoop
from tests.factories import bot_user_create
from tests.workflows.conftest import command, publish
from tests.workflows.test_tasks import delivered_texts
from workflows.models import ExecutionStepLog, WorkflowExecution
from workflows.timers import timers_due, timers_fire_due

Status = WorkflowExecution.Status

ASK = {
    "start": "ask",
    "steps": {
        "ask": {
            "type": "input",
            "text": "Feedback?",
            "variable": "feedback",
            "timeout": 30,
            "on_timeout": "late",
            "next": "ok",
        },
        "ok": {"type": "end"},
        "late": {"type": "message", "text": "No answer, {{ user.first_name }}"},
    },
}
DELAY = {
    "start": "wait",
    "steps": {
        "wait": {"type": "delay", "seconds": 30, "next": "hello"},
        "hello": {"type": "message", "text": "Later"},
    },
}


@pytest.fixture
def bot_user_factory(project):
    def make(**fields):
        return bot_user_create(project=project, first_name="Ann", **fields)

    return make


def due_at(execution_id: int, seconds_ago: float) -> None:
    WorkflowExecution.objects.filter(pk=execution_id).update(
        wait_until=timezone.now() - timedelta(seconds=seconds_ago)
    )


def test_a_wait_not_due_yet_is_left_alone_then_fires_once(project, user, delivered):
    publish(project, ASK)
    command(user, "start")
    execution = WorkflowExecution.objects.get()
    assert timers_due() == []
    assert TimerLoop(interval=0.5).run_once() == 0
    due_at(execution.pk, 0.1)
    assert TimerLoop(interval=0.5).run_once() == 1
    assert TimerLoop(interval=0.5).run_once() == 0  # the next poll: nothing twice
    assert delivered_texts(delivered) == ["No answer, Ann"]
    execution.refresh_from_db()
    assert execution.status == Status.COMPLETED


def test_due_timers_come_earliest_first_waits_and_delays_alike(project, bot_user_factory):
    publish(project, ASK, triggers=[{"type": "command", "command": "ask"}])
    publish(project, DELAY, triggers=[{"type": "command", "command": "later"}])
    ids = []
    for name in ["ask", "later", "ask", "later"]:
        user = bot_user_factory()
        command(user, name)
        execution = WorkflowExecution.objects.filter(user=user).get()
        ids.append(execution.pk)
    for age, pk in zip([1, 4, 3, 2], ids, strict=True):
        due_at(pk, age)
    due = timers_due()
    assert [pk for _kind, pk, _seq in due] == [ids[1], ids[2], ids[3], ids[0]]
    assert [kind for kind, _pk, _seq in due] == ["delay", "expire", "delay", "expire"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_pollers_fire_every_timer_exactly_once(project, bot_user_factory, delivered):
    publish(project, ASK, triggers=[{"type": "command", "command": "ask"}])
    publish(project, DELAY, triggers=[{"type": "command", "command": "later"}])
    executions = []
    for index in range(12):
        user = bot_user_factory()
        command(user, "ask" if index % 2 else "later")
        executions.append(WorkflowExecution.objects.get(user=user).pk)
    for pk in executions:
        due_at(pk, 0.5)
    start = threading.Barrier(3)
    fired: list[int] = []

    def poller() -> None:
        try:
            start.wait(10)
            for _ in range(3):
                fired.append(timers_fire_due())
        finally:
            connection.close()

    threads = [threading.Thread(target=poller) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(fired) == 12
    assert sorted(d["chat_id"] for d in delivered) == sorted(
        WorkflowExecution.objects.filter(pk__in=executions).values_list("user__chat_id", flat=True)
    )
    assert len(delivered) == 12  # one message per conversation, none twice
    assert ExecutionStepLog.objects.filter(step__in=["late", "hello"]).count() == 12
    assert not WorkflowExecution.objects.filter(
        pk__in=executions, status__in=[Status.WAITING, Status.RUNNING]
    ).exists()


@pytest.mark.django_db(transaction=True)
def test_a_timer_survives_a_restart_of_the_poller(project, user, delivered):
    """The timer lives in the row: a poller that stopped before it was due (a
    restarted runner, a lost Celery task) is replaced by a new one that fires it."""
    publish(project, DELAY)
    command(user, "start")
    execution = WorkflowExecution.objects.get()
    stop = threading.Event()
    first = threading.Thread(target=TimerLoop(interval=0.05).run, args=(stop,))
    first.start()
    time.sleep(0.2)
    stop.set()
    first.join(10)
    assert delivered == []  # not due while the first poller ran
    due_at(execution.pk, 0.1)  # due while no poller runs
    stop = threading.Event()
    second = threading.Thread(target=TimerLoop(interval=0.05).run, args=(stop,))
    second.start()
    try:
        deadline = time.monotonic() + 20
        while not delivered and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        second.join(10)
    assert delivered_texts(delivered) == ["Later"]
    execution.refresh_from_db()
    assert execution.status == Status.COMPLETED


def test_a_timer_that_raises_is_retried_later_not_at_every_poll(
    project, user, delivered, monkeypatch
):
    from workflows import services, timers

    publish(project, ASK)
    command(user, "start")
    execution = WorkflowExecution.objects.get()
    due_at(execution.pk, 0.1)
    calls = []

    def broken(**kwargs):
        calls.append(kwargs)
        raise RuntimeError("database said no")

    monkeypatch.setattr(services, "execution_expire", broken)
    monkeypatch.setattr(timers, "_failed", {})
    assert timers_fire_due() == 0
    assert timers_fire_due() == 0
    assert len(calls) == 1
    monkeypatch.undo()
    timers._failed.clear()
    assert timers_fire_due() == 1
    assert delivered_texts(delivered) == ["No answer, Ann"]


def test_the_bot_runner_polls_timers_unless_turned_off(settings):
    from botplatform.telegram.polling import Runner

    assert Runner(bot_ids=[1]).timers.enabled
    settings.WORKFLOW_TIMER_POLL_INTERVAL = 0
    assert not Runner(bot_ids=[1]).timers.enabled
