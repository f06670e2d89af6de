"""``end``: the conversation is over (an execution also ends at a step without ``next``)."""

from __future__ import annotations

from workflows.engine.steps.base import DESCRIPTION_FIELD, Goto, Outcome, StepRuntime, StepType


class EndStep(StepType):
    type = "end"
    label = "End the conversation"
    description = "The conversation is over."
    fields = (DESCRIPTION_FIELD,)
    target_fields = ()

    def run(self, rt: StepRuntime) -> Outcome:
        return Goto(None)
