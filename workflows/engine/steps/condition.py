"""``condition``: the first branch whose expression holds, else ``default``."""

from __future__ import annotations

from typing import Any

from workflows.engine.conditions import ConditionError, condition_evaluate, condition_parse
from workflows.engine.steps.base import (
    DESCRIPTION_FIELD,
    STEP_REF,
    Checker,
    FieldSpec,
    Goto,
    Outcome,
    StepFailure,
    StepRuntime,
    StepType,
    step_ref,
)


class ConditionStep(StepType):
    type = "condition"
    label = "Branch on a condition"
    description = "The first branch whose 'if' holds, else 'default'."
    fields = (
        FieldSpec(
            "branches",
            "branches",
            "Branches",
            "Tried in order; the first whose condition holds wins.",
            schema={
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {"if": {"type": "string"}, "next": STEP_REF},
                    "required": ["if", "next"],
                    "additionalProperties": False,
                },
            },
            required=True,
            problem='a non-empty list of {"if": ..., "next": ...}',
        ),
        step_ref("default", "Otherwise go to"),
        DESCRIPTION_FIELD,
    )
    target_fields = ("default",)

    def targets(self, step: dict) -> list[tuple[str, Any]]:
        found = super().targets(step)
        branches = step.get("branches")
        if isinstance(branches, list):
            for index, branch in enumerate(branches, start=1):
                if isinstance(branch, dict) and branch.get("next") is not None:
                    found.append((f"branch {index}", branch["next"]))
        return found

    def check(self, checker: Checker) -> None:
        branches = checker.step.get("branches")
        if not isinstance(branches, list) or not branches:
            checker.add('\'branches\' must be a non-empty list of {"if": ..., "next": ...}')
            return
        for index, branch in enumerate(branches, start=1):
            if not isinstance(branch, dict):
                checker.add(f"branch {index} must be an object")
                continue
            if not branch.get("next"):
                checker.add(f"branch {index} has no 'next' step")
            try:
                condition_parse(branch.get("if"))
            except ConditionError as exc:
                checker.add(f"branch {index} condition: {exc}")
            except TypeError:
                checker.add(f"branch {index} condition must be a text")

    def run(self, rt: StepRuntime) -> Outcome:
        context = rt.context()
        for index, branch in enumerate(rt.step.get("branches") or [], start=1):
            try:
                holds = condition_evaluate(branch["if"], context)
            except ConditionError as exc:
                raise StepFailure(f"branch {index} condition: {exc}") from exc
            if holds:
                rt.output["branch"] = index
                return Goto(branch["next"])
        rt.output["branch"] = "default"
        return Goto(rt.step.get("default"))
