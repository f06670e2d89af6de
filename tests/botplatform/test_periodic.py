"""Without a broker or beat (the embedded default) the schedule still runs in-process.

The end-to-end case (a due delay continues) is in tests/workflows/test_tasks.py."""

from __future__ import annotations

import pytest

from botplatform.periodic import InProcessBeat

pytestmark = pytest.mark.django_db


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_failing_entry_does_not_stop_the_others():
    clock = Clock()
    beat = InProcessBeat(
        {
            "broken": {"task": "no.such.task", "schedule": 5},
            "sweep": {"task": "workflows.tasks.executions_sweep", "schedule": 5.0},
        },
        clock=clock,
    )
    clock.now += 5
    assert beat.run_due() == ["broken", "sweep"]
    assert beat.run_due() == []


def test_the_bot_runner_runs_the_schedule_only_without_a_broker(settings):
    from botplatform.telegram.polling import Runner

    settings.CELERY_TASK_ALWAYS_EAGER = True
    assert isinstance(Runner(bot_ids=[1]).beat, InProcessBeat)
    settings.CELERY_TASK_ALWAYS_EAGER = False  # a real broker: celery beat does it
    assert Runner(bot_ids=[1]).beat is None
