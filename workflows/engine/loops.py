"""When a loop that never waits for the user is still finite: a counter and a maximum.

Publishing refuses a cycle of steps that never waits for the user (it would run
forever). A retry loop is fine, though, when it counts its rounds and stops at a
maximum. The loop is accepted when, inside it:

- a ``set_variable`` step increases (or decreases) a variable ``V`` by a fixed
  positive number (``increment``/``decrement``, ``value`` absent or a positive
  number), and no other step of the loop sets, deletes or moves ``V`` the other way;
- a ``condition`` step has a branch that leaves the loop when ``V`` reaches a
  maximum, ``vars.V >= 3`` or ``vars.V > 3`` (``<=``/``<`` for a countdown), alone or
  as one part of an ``or``, and every branch tried before it leaves the loop too
  (so nothing can skip the check);
- every round passes both steps (no shorter cycle inside the loop avoids them).

Each round then moves ``V`` one fixed step closer to the maximum, so the loop ends.
(At run time one event still runs at most 100 steps; see docs/workflows.md.)
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from workflows.engine.conditions import ConditionError, condition_parse

UP, DOWN = ">", "<"
_FLIPPED = {">=": "<=", ">": "<", "<=": ">=", "<": ">"}


def _counters(group: set[str], steps: dict[str, dict]) -> dict[str, str]:
    """Variables moved in one direction only inside the loop: name → UP or DOWN."""
    moves: dict[str, set[str]] = {}
    for step_id in group:
        step = steps[step_id]
        if step.get("type") != "set_variable" or not isinstance(step.get("variable"), str):
            continue
        name, operation = step["variable"], step.get("operation", "set")
        value = step.get("value", 1)
        fixed = (
            isinstance(value, int | float) and not isinstance(value, bool) and value > 0
        ) or "value" not in step
        if operation in {"increment", "decrement"} and fixed:
            moves.setdefault(name, set()).add(UP if operation == "increment" else DOWN)
        else:
            moves.setdefault(name, set()).add("other")
    return {name: next(iter(kinds)) for name, kinds in moves.items() if kinds in ({UP}, {DOWN})}


def _limits(tree: tuple) -> list[tuple[str, str]]:
    """(variable, direction) pairs a condition tree stops at: ``vars.V >= 3`` → (V, UP)."""
    if tree[0] == "or":
        return [limit for child in tree[1:] for limit in _limits(child)]
    if tree[0] != "cmp" or tree[1] not in _FLIPPED:
        return []
    op, left, right = tree[1], tree[2], tree[3]
    if right[0] == "path" and left[0] == "lit":
        op, left, right = _FLIPPED[op], right, left
    if not (left[0] == "path" and len(left[1]) == 2 and left[1][0] == "vars"):
        return []
    if right[0] != "lit" or not isinstance(right[1], Decimal):
        return []
    return [(left[1][1], UP if op in {">=", ">"} else DOWN)]


def _acyclic_without(members: set[str], removed: set[str], graph: dict[str, list[str]]) -> bool:
    """Whether the loop's steps minus ``removed`` hold no cycle (Kahn's algorithm): then
    every round of the loop passes a removed step."""
    nodes = members - removed
    incoming = {node: 0 for node in nodes}
    for node in nodes:
        for target in graph.get(node, []):
            if target in nodes:
                incoming[target] += 1
    ready = [node for node, count in incoming.items() if count == 0]
    seen = 0
    while ready:
        node = ready.pop()
        seen += 1
        for target in graph.get(node, []):
            if target in nodes:
                incoming[target] -= 1
                if incoming[target] == 0:
                    ready.append(target)
    return seen == len(nodes)


def loop_is_bounded(group: list[str], steps: dict[str, dict], graph: dict[str, list[str]]) -> bool:
    """Whether every round of the loop ``group`` moves a counter and passes its check."""
    members = set(group)
    counters = _counters(members, steps)
    for step_id in group:
        step = steps[step_id]
        if step.get("type") != "condition" or not isinstance(step.get("branches"), list):
            continue
        for branch in step["branches"]:
            if not isinstance(branch, dict) or branch.get("next") in members:
                break  # a branch before the exit that stays in the loop could skip it
            try:
                tree = condition_parse(branch.get("if"))
            except (ConditionError, TypeError):
                break
            for name, way in _limits(tree):
                if counters.get(name) != way:
                    continue
                movers = {
                    member
                    for member in members
                    if steps[member].get("type") == "set_variable"
                    and steps[member].get("variable") == name
                }
                if _acyclic_without(members, {step_id}, graph) and _acyclic_without(
                    members, movers, graph
                ):
                    return True
    return False


LOOP_ADVICE = (
    "To repeat on purpose, count the rounds: a set_variable step in the loop that "
    "increases a variable (e.g. tries), and a condition step whose first branch leaves "
    "the loop at a maximum (e.g. vars.tries >= 3)."
)


def loop_problem(
    group: list[str], steps: dict[str, Any], graph: dict[str, list[str]]
) -> str | None:
    """Why the loop runs forever, or None when it is bounded (``graph``: step → targets)."""
    if loop_is_bounded(group, steps, graph):
        return None
    return (
        "these steps form a loop that never waits for the user and would run "
        f"forever: {' → '.join(group)}. {LOOP_ADVICE}"
    )
