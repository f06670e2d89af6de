"""``delay``: continue after a while (seconds to days).

The due time is stored on the execution (``wait_until``), so nothing is lost when a
worker or the broker restarts: a short delay is also queued as a Celery task with an
ETA, and a periodic sweep continues every overdue delay.
"""

from __future__ import annotations

from datetime import timedelta

from workflows.engine.steps.base import (
    DESCRIPTION_FIELD,
    Checker,
    FieldSpec,
    Goto,
    Outcome,
    Pending,
    StepRuntime,
    StepType,
    step_ref,
)

UNITS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}
MAX_DELAY = 366 * 86400


def delay_seconds(step: dict) -> float:
    return sum(float(step.get(unit) or 0) * factor for unit, factor in UNITS.items())


class DelayStep(StepType):
    type = "delay"
    label = "Wait some time"
    description = "Continue after a while: the units add up (at most 366 days)."
    fields = (
        *(
            FieldSpec(unit, "number", unit.capitalize(), schema={"type": "number", "minimum": 0})
            for unit in ("days", "hours", "minutes", "seconds")
        ),
        step_ref("next", "Then go to"),
        DESCRIPTION_FIELD,
    )
    waits = True

    def check(self, checker: Checker) -> None:
        if not any(unit in checker.step for unit in UNITS):
            checker.add("give the duration in 'seconds', 'minutes', 'hours' or 'days'")
            return
        try:
            total = delay_seconds(checker.step)
        except (TypeError, ValueError):
            return
        if total <= 0:
            checker.add("the delay must be longer than zero")
        elif total > MAX_DELAY:
            checker.add("the delay must be at most 366 days")

    def run(self, rt: StepRuntime) -> Outcome:
        seconds = delay_seconds(rt.step)
        until = rt.now + timedelta(seconds=seconds)
        rt.output["until"] = until.isoformat()
        return Pending(kind="delay", until=until, state={"seq": rt.next_seq()})

    def timer(self, rt: StepRuntime, data: dict | None) -> Outcome:
        return Goto(rt.step.get("next"))
