"""Whole-graph validation, run on publish: every error names its step.

Each step is checked against its type's JSON Schema (workflows/engine/schema.py,
built from the fields the step type declares) and by the step type's own checks for
what a schema cannot say (templates, expressions, fields that depend on each other);
where both speak about one field, the step type's more specific message is kept.
Then the graph: references to missing steps, unreachable steps, cycles that never
wait for the user (they would loop forever), and the triggers' own problems.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from workflows.engine.definition import definition_shape_problems
from workflows.engine.loops import loop_problem
from workflows.engine.patterns import pattern_problem
from workflows.engine.schema import (
    step_shape_problems,
    trigger_kind_schemas,
    trigger_shape_problems,
)
from workflows.engine.steps import STEP_TYPES
from workflows.engine.steps.base import CALLBACK_DATA_LIMIT, Checker, StepType

TRIGGER_TYPES = tuple(trigger_kind_schemas())
# Deeper than any real workflow (a JSON body nests a few levels); refused before the
# checks, which would otherwise recurse into it.
MAX_DEPTH = 64
# Messages name their field first: "'validate.min' must be ...".
_NAMED = re.compile(r"^'[^']*'")
# How a step type's own messages name a field besides "'field' ...".
_CHECK_PREFIXES = {"buttons": ("button ",), "branches": ("branch ",), "headers": ("header ",)}


@dataclass(frozen=True, slots=True)
class StepError:
    step: str  # "" for the workflow as a whole, "trigger N" for a trigger
    message: str

    def __str__(self) -> str:
        return f"{self.step}: {self.message}" if self.step else self.message


class WorkflowValidationError(Exception):
    """The definition cannot be published; ``errors`` say where and why."""

    def __init__(self, errors: list[StepError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(error) for error in errors))


def _too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests lists or objects more than ``limit`` levels (no recursion)."""
    frontier, depth = [value], 0
    while frontier:
        depth += 1
        if depth > limit:
            return True
        nested = []
        for item in frontier:
            if isinstance(item, dict):
                nested.extend(v for v in item.values() if isinstance(v, dict | list))
            elif isinstance(item, list):
                nested.extend(v for v in item if isinstance(v, dict | list))
        frontier = nested
    return False


def _step_problems(step_id: str, step_type: str, step: dict) -> list[str]:
    """The step type's own problems, then shape problems about fields they do not name."""
    checker = Checker(step_id, step)
    STEP_TYPES[step_type].check(checker)
    problems = list(checker.problems)
    named = {match.group() for problem in checker.problems if (match := _NAMED.match(problem))}
    for field, message in step_shape_problems(step_type, step):
        match = _NAMED.match(message)
        if match and match.group() in named:
            continue
        if any(problem.startswith(_CHECK_PREFIXES.get(field, ())) for problem in checker.problems):
            continue
        problems.append(message)
    return problems


def _handler(step: dict) -> StepType | None:
    kind = step.get("type")
    return STEP_TYPES.get(kind) if isinstance(kind, str) else None


def _quoted(value: Any) -> str:
    """A value from the definition inside a message: quoted, and short."""
    text = str(value)
    return f"'{text[:64]}…'" if len(text) > 64 else f"'{text}'"


def _edges(steps: dict[str, dict]) -> dict[str, list[tuple[str, Any]]]:
    edges = {}
    for step_id, step in steps.items():
        handler = _handler(step)
        edges[step_id] = handler.targets(step) if handler else []
    return edges


def _cycles_without_wait(steps: dict[str, dict], edges: dict) -> list[list[str]]:
    """Strongly connected groups of steps that never stop for the user (Tarjan)."""
    nodes = [
        step_id
        for step_id, step in steps.items()
        if (handler := _handler(step)) is not None and not handler.waits_for(step)
    ]
    allowed = set(nodes)
    graph = {
        node: [t for _, t in edges[node] if isinstance(t, str) and t in allowed] for node in nodes
    }
    index_of: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        # Iterative-enough for workflow sizes (hundreds of steps at most).
        index_of[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index_of:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index_of[target])
        if low[node] == index_of[node]:
            group = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                group.append(item)
                if item == node:
                    break
            if len(group) > 1 or node in graph[node]:
                groups.append(sorted(group))

    for node in nodes:
        if node not in index_of:
            visit(node)
    return groups


def triggers_problems(triggers: Any) -> list[StepError]:
    """The triggers' problems: each against its kind's schema
    (:func:`workflows.engine.schema.trigger_kind_schemas`, the one statement of the
    rules), then what a schema cannot say: a regular expression that does not compile
    or could run away, callback data over Telegram's limit in bytes."""
    if triggers is None:
        return []
    if not isinstance(triggers, list):
        return [StepError("triggers", "must be a list")]
    errors = []
    for number, trigger in enumerate(triggers, start=1):
        where = f"trigger {number}"
        if not isinstance(trigger, dict):
            errors.append(StepError(where, "must be an object with a 'type'"))
            continue
        kind = trigger.get("type")
        if not isinstance(kind, str) or kind not in TRIGGER_TYPES:
            errors.append(StepError(where, f"'type' must be one of: {', '.join(TRIGGER_TYPES)}"))
            continue
        own = []
        pattern = trigger.get("pattern")
        if kind == "regex" and isinstance(pattern, str):
            problem = pattern_problem(pattern)
            if problem:
                # "'pattern' is not a regular expression: …" for syntax errors.
                problem = problem.replace("this is not a valid", "is not a", 1)
                glue = " " if problem.startswith("is not a") else ": "
                own.append(f"'pattern'{glue}{problem}")
        if kind == "callback":
            for name in ("data", "prefix"):
                value = trigger.get(name)
                if isinstance(value, str) and len(value.encode()) > CALLBACK_DATA_LIMIT:
                    own.append(
                        f"'{name}': callback data is longer than {CALLBACK_DATA_LIMIT} bytes"
                    )
        named = {match.group() for problem in own if (match := _NAMED.match(problem))}
        for problem in trigger_shape_problems(kind, trigger):
            match = _NAMED.match(problem)
            if not (match and match.group() in named):
                own.append(problem)
        errors.extend(StepError(where, problem) for problem in own)
    return errors


def workflow_validate(
    definition: Any, *, triggers: Any = None, known_workflows: set[str] | None = None
) -> None:
    """Raise :class:`WorkflowValidationError` listing every problem found."""
    if _too_deep(definition):
        message = f"the definition nests lists or objects more than {MAX_DEPTH} levels deep"
        raise WorkflowValidationError([StepError("", message)])
    errors = [StepError(step, message) for step, message in definition_shape_problems(definition)]
    errors.extend(triggers_problems(triggers))
    if any(error.step == "" for error in errors) or not isinstance(definition, dict):
        raise WorkflowValidationError(errors)
    steps: dict[str, dict] = definition["steps"]
    for step_id, step in steps.items():
        if not isinstance(step, dict):
            continue
        handler = _handler(step)
        if handler is None:
            if not isinstance(step.get("type"), str):
                continue  # the shape check said so
            errors.append(
                StepError(
                    step_id,
                    f"unknown step type {_quoted(step['type'])} "
                    f"(known: {', '.join(sorted(STEP_TYPES))})",
                )
            )
            continue
        errors.extend(
            StepError(step_id, problem) for problem in _step_problems(step_id, handler.type, step)
        )
        if (
            known_workflows is not None
            and step.get("type") in {"start_workflow", "call_workflow"}
            and isinstance(step.get("workflow"), str)
            and step["workflow"] not in known_workflows
        ):
            errors.append(
                StepError(
                    step_id, f"there is no workflow {_quoted(step['workflow'])} in this project"
                )
            )
    steps = {k: v for k, v in steps.items() if isinstance(v, dict)}
    edges = _edges(steps)
    for step_id, targets in edges.items():
        for where, target in targets:
            if not isinstance(target, str) or target not in steps:
                errors.append(
                    StepError(
                        step_id,
                        f"{where} points to the step {_quoted(target)}, which does not exist",
                    )
                )
    reachable = set()
    frontier = [definition["start"]]
    while frontier:
        node = frontier.pop()
        if node in reachable or node not in steps:
            continue
        reachable.add(node)
        frontier.extend(t for _, t in edges[node] if isinstance(t, str))
    for step_id in steps:
        if step_id not in reachable:
            errors.append(StepError(step_id, "unreachable: no path leads here from the start step"))
    for group in _cycles_without_wait(steps, edges):
        graph = {node: [t for _, t in edges[node] if isinstance(t, str)] for node in group}
        problem = loop_problem(group, steps, graph)  # a counter and a maximum: finite
        if problem:
            errors.append(StepError(group[0], problem))
    if errors:
        raise WorkflowValidationError(errors)


def workflow_warnings(definition: Any) -> list[StepError]:
    """Likely mistakes that do not stop publishing, by step (e.g. an ``http_request``
    ``save`` path that finds nothing in the step's example response)."""
    if not isinstance(definition, dict) or not isinstance(definition.get("steps"), dict):
        return []
    if _too_deep(definition):
        return []
    found = []
    for step_id, step in definition["steps"].items():
        handler = _handler(step) if isinstance(step, dict) else None
        if handler is not None:
            found.extend(StepError(step_id, message) for message in handler.warnings(step))
    return found
