"""``call_workflow``: run another workflow as a sub-flow, then come back to ``next``.

The caller pauses (status running, pending ``call``) while the sub-flow runs, for as
long as the sub-flow takes: it may wait for the user, a delay or an HTTP answer. When
the sub-flow completes, the caller copies the ``output`` variables and goes on at
``next`` in the same event. A sub-flow that fails or is cancelled (the user started
something else) ends its callers quietly. Calls nest at most :data:`MAX_CALL_DEPTH`
deep, so a workflow calling itself cannot go on forever.
"""

from __future__ import annotations

from typing import Any

from workflows.engine.expressions import ExpressionError, expression_check, expression_evaluate
from workflows.engine.steps.base import (
    DESCRIPTION_FIELD,
    Call,
    Checker,
    FieldSpec,
    Goto,
    Outcome,
    StepFailure,
    StepRuntime,
    StepType,
    step_ref,
)
from workflows.engine.steps.set_variable import variable_name_problem

MAX_CALL_DEPTH = 5
# A caller whose sub-flow never reports back (e.g. its wait was replaced in bulk) is
# ended quietly by the sweep after this long; longer than any wait (366 days).
CALL_TIMEOUT_DAYS = 400


class CallWorkflowStep(StepType):
    type = "call_workflow"
    label = "Run another workflow and come back"
    description = "Run another workflow as a sub-flow, then continue with the next step."
    fields = (
        FieldSpec(
            "workflow",
            "workflow",
            "Workflow",
            "Runs its published version; when it ends, this workflow goes on.",
            schema={"type": "string", "minLength": 1},
            required=True,
        ),
        FieldSpec(
            "input",
            "pairs",
            "Give it",
            "One per line: variable: expression, set before it starts, e.g. "
            "“amount: vars.price * 2”.",
            schema={"type": "object", "additionalProperties": {"type": "string"}},
            problem="an object of variable name → expression",
        ),
        FieldSpec(
            "output",
            "pairs",
            "Take back",
            "One per line: variable here: its variable, copied when it returns, e.g. "
            "“total: result”.",
            schema={"type": "object", "additionalProperties": {"type": "string"}},
            problem="an object of variable name → variable name",
        ),
        step_ref("next", "When it returns go to"),
        DESCRIPTION_FIELD,
    )

    def check(self, checker: Checker) -> None:
        step = checker.step
        slug = step.get("workflow")
        if not isinstance(slug, str) or not slug:
            checker.add("'workflow' (the slug of the workflow to run) is missing")
        for key in ("input", "output"):
            pairs = step.get(key, {})
            if not isinstance(pairs, dict):
                checker.add(
                    f"'{key}' must map variable names to "
                    + ("expressions" if key == "input" else "variable names")
                )
                continue
            for name, value in pairs.items():
                problem = variable_name_problem(name)
                if problem:
                    checker.add(f"'{key}' {name}: {problem}")
                if key == "input":
                    problem = expression_check(value)
                elif not isinstance(value, str) or variable_name_problem(value):
                    problem = "the sub-flow's variable name, e.g. result"
                if problem:
                    checker.add(f"'{key}' {name}: {problem}")

    def run(self, rt: StepRuntime) -> Outcome:
        depth = int(rt.execution.context.get("call_depth", 0))
        if depth >= MAX_CALL_DEPTH:
            raise StepFailure(f"sub-flows are nested more than {MAX_CALL_DEPTH} deep")
        for name, source in (rt.step.get("input") or {}).items():
            try:
                value = expression_evaluate(source, rt.context())
            except ExpressionError as exc:
                raise StepFailure(f"'input' {name}: {exc}") from exc
            rt.data.variable_set(name, value)
        rt.output["workflow"] = rt.step["workflow"]
        return Call(workflow=rt.step["workflow"])

    def timer(self, rt: StepRuntime, data: dict | None) -> Outcome:
        if not data or not data.get("returned"):
            rt.output["returned"] = False  # the sweep: the sub-flow never came back
            return Goto(None)
        copied: dict[str, Any] = {}
        for name, source in (rt.step.get("output") or {}).items():
            copied[name] = rt.data.variables.get(source)
            rt.data.variable_set(name, copied[name])
        rt.output.update(returned=True, output=copied)
        return Goto(rt.step.get("next"))
