"""``set_variable``: set, calculate, increment, decrement or delete a user's variable.

``calculate`` stores the typed value of an expression (expressions.py): a number
stays a number, a date becomes ISO text (``2026-12-31``), a list stays a list.
"""

from __future__ import annotations

import re

from workflows.engine.expressions import ExpressionError, expression_check, expression_evaluate
from workflows.engine.numbers import NumberError, number_parse, number_plain
from workflows.engine.steps.base import (
    DESCRIPTION_FIELD,
    Checker,
    FieldSpec,
    Goto,
    Outcome,
    StepFailure,
    StepRuntime,
    StepType,
    step_ref,
)
from workflows.engine.templating import template_check

VARIABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
RESERVED = frozenset({"balance", "level", "referrals"})
OPERATIONS = ("set", "calculate", "increment", "decrement", "delete")
VARIABLE_SCHEMA = {
    "type": "string",
    "pattern": VARIABLE_RE.pattern,
    "not": {"enum": sorted(RESERVED)},
}
VARIABLE_PROBLEM = "a variable name: a letter, then letters, digits or _ (max 64), not " + (
    ", ".join(sorted(RESERVED))
)


def variable_name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not VARIABLE_RE.match(name):
        return "a variable name is a letter followed by letters, digits or _ (max 64)"
    if name in RESERVED:
        return f"'{name}' is managed by the loyalty programme; use a bonus step"
    return None


def _as_number(value: object) -> int | float:
    """The step's increment, through the bounded number parser (a decimal comma is fine)."""
    if isinstance(value, str):
        value = value.replace(",", ".")
    try:
        return number_plain(number_parse(value))
    except NumberError as exc:
        raise StepFailure(f"'{str(value)[:40]}' {exc}") from None


class SetVariableStep(StepType):
    type = "set_variable"
    label = "Set a variable"
    description = "Set, increase, decrease or delete one of the user's variables."
    fields = (
        FieldSpec(
            "variable",
            "line",
            "Variable",
            schema=VARIABLE_SCHEMA,
            required=True,
            problem=VARIABLE_PROBLEM,
        ),
        FieldSpec(
            "operation",
            "choice",
            "Operation",
            choices=tuple(
                zip(
                    OPERATIONS,
                    ("Set to", "Calculate", "Increase by", "Decrease by", "Delete"),
                    strict=True,
                )
            ),
        ),
        FieldSpec(
            "value",
            "value",
            "Value",
            "A text (templates work) or a number; for increase/decrease a number (default 1); "
            "for calculate an expression such as vars.price * 0.9 or age(vars.birthday).",
        ),
        step_ref("next", "Then go to"),
        DESCRIPTION_FIELD,
    )
    atomic = True

    def check(self, checker: Checker) -> None:
        step = checker.step
        problem = variable_name_problem(step.get("variable"))
        if problem:
            checker.add(f"'variable': {problem}")
        checker.choice("operation", OPERATIONS, default="set")
        operation = step.get("operation", "set")
        value = step.get("value")
        if operation in {"set", "calculate"} and "value" not in step:
            checker.add("'value' is missing")
        if operation == "calculate":
            problem = expression_check(value) if isinstance(value, str) else None
            if not isinstance(value, str):
                checker.add("'value' must be an expression such as vars.price * 0.9")
            elif problem:
                checker.add(f"'value': {problem}")
        elif isinstance(value, str):
            problem = template_check(value)
            if problem:
                checker.add(f"'value': {problem}")
        elif (
            operation in {"increment", "decrement"}
            and value is not None
            and (isinstance(value, bool) or not isinstance(value, int | float))
        ):
            checker.add("'value' must be a number (or a template giving one)")

    def run(self, rt: StepRuntime) -> Outcome:
        step = rt.step
        name = step["variable"]
        operation = step.get("operation", "set")
        value = step.get("value")
        if operation == "calculate":
            try:
                value = expression_evaluate(value, rt.context())
            except ExpressionError as exc:
                raise StepFailure(f"'value': {exc}") from exc
            rt.data.variable_set(name, value)
            rt.output.update(variable=name, operation=operation, value=value)
            return Goto(step.get("next"))
        if isinstance(value, str):
            value = rt.render(value, escape=False)
        if operation == "delete":
            rt.data.variable_delete(name)
        elif operation == "set":
            rt.data.variable_set(name, value)
        else:
            by = _as_number(1 if value is None else value)
            value = rt.data.variable_increment(name, by if operation == "increment" else -by)
        rt.output.update(variable=name, operation=operation, value=value)
        return Goto(step.get("next"))
