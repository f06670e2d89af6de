"""``start_workflow``: finish this execution and continue in another workflow."""

from __future__ import annotations

from workflows.engine.steps.base import (
    DESCRIPTION_FIELD,
    Checker,
    FieldSpec,
    Jump,
    Outcome,
    StepRuntime,
    StepType,
)


class StartWorkflowStep(StepType):
    type = "start_workflow"
    label = "Go to another workflow"
    description = "Finish this conversation and continue in another workflow."
    fields = (
        FieldSpec(
            "workflow",
            "workflow",
            "Workflow",
            "Continues in its published version.",
            schema={"type": "string", "minLength": 1},
            required=True,
        ),
        DESCRIPTION_FIELD,
    )
    target_fields = ()

    def check(self, checker: Checker) -> None:
        slug = checker.step.get("workflow")
        if not isinstance(slug, str) or not slug:
            checker.add("'workflow' (the slug of the workflow to start) is missing")

    def run(self, rt: StepRuntime) -> Outcome:
        rt.output["workflow"] = rt.step["workflow"]
        return Jump(workflow=rt.step["workflow"])
