"""Bounded loops: whatever publishing accepts must end. Random small graphs of
counters, conditions and messages; each accepted one is run by a tiny interpreter
from any starting counter values and must stop well within a few thousand steps."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from workflows.engine.conditions import condition_evaluate
from workflows.engine.validation import WorkflowValidationError, workflow_validate

IDS = ["a", "b", "c", "d", "e"]
target = st.sampled_from([*IDS, "end"])
variable = st.sampled_from(["n", "m"])
set_variable = st.builds(
    lambda name, operation, value, nxt: {
        "type": "set_variable",
        "variable": name,
        "operation": operation,
        **({} if value is None else {"value": value}),
        "next": nxt,
    },
    variable,
    st.sampled_from(["increment", "decrement", "set"]),
    st.one_of(st.none(), st.integers(-2, 3)),
    target,
)
comparison = st.builds(
    lambda name, op, number, flipped: (
        f"{number} {op} vars.{name}" if flipped else f"vars.{name} {op} {number}"
    ),
    variable,
    st.sampled_from([">=", ">", "<=", "<", "=="]),
    st.integers(-5, 5),
    st.booleans(),
)
condition = st.builds(
    lambda branches, default: {
        "type": "condition",
        "branches": [{"if": cond, "next": nxt} for cond, nxt in branches],
        "default": default,
    },
    st.lists(st.tuples(comparison, target), min_size=1, max_size=3),
    target,
)
message = st.builds(lambda nxt: {"type": "message", "text": "x", "next": nxt}, target)
random_graphs = st.lists(st.one_of(set_variable, condition, message), min_size=2, max_size=5)
# Near-misses of a bounded loop: a counter, a check that may leave, other steps; the
# shapes publishing must tell apart (wrong direction, reset, a bypass, an early branch).
counter = st.builds(
    lambda name, operation, value, nxt: {
        "type": "set_variable",
        "variable": name,
        "operation": operation,
        **({} if value is None else {"value": value}),
        "next": nxt,
    },
    variable,
    st.sampled_from(["increment", "decrement"]),
    st.one_of(st.none(), st.integers(1, 3)),
    st.sampled_from(["b", "c", "d"]),
)
check = st.builds(
    lambda branches, exit_at, default: {
        "type": "condition",
        "branches": [*branches[:exit_at], {"if": branches[-1]["if"], "next": "end"}],
        "default": default,
    },
    st.lists(
        st.builds(lambda c, t: {"if": c, "next": t}, comparison, target), min_size=1, max_size=3
    ),
    st.integers(0, 2),
    st.sampled_from(["a", "c", "d"]),
)
loop_graphs = st.builds(
    lambda first, second, rest: [first, second, *rest],
    counter,
    check,
    st.lists(st.one_of(set_variable, condition, message), max_size=3),
)
graphs = st.one_of(random_graphs, loop_graphs)


def _definition(steps: list[dict]) -> dict:
    ids = IDS[: len(steps)]
    fixed = {}
    for step_id, step in zip(ids, steps, strict=False):
        step = dict(step)
        for key in ("next", "default"):
            if key in step and step[key] not in ids:
                step[key] = "end"
        if step["type"] == "set_variable" and step["operation"] == "set":
            step.setdefault("value", 0)
        if "branches" in step:
            step["branches"] = [
                {**b, "next": b["next"] if b["next"] in ids else "end"} for b in step["branches"]
            ]
        fixed[step_id] = step
    fixed["end"] = {"type": "end"}
    # Only what the start reaches (unreachable steps are refused, and say nothing here).
    reached, frontier = set(), [ids[0]]
    while frontier:
        step_id = frontier.pop()
        if step_id in reached:
            continue
        reached.add(step_id)
        step = fixed[step_id]
        frontier.extend(step[key] for key in ("next", "default") if key in step)
        frontier.extend(b["next"] for b in step.get("branches", []))
    return {"start": ids[0], "steps": {k: v for k, v in fixed.items() if k in reached}}


def _run(definition: dict, start: dict[str, int], limit: int = 5000) -> int:
    variables = dict(start)
    step_id = definition["start"]
    for taken in range(limit):
        step = definition["steps"][step_id]
        kind = step["type"]
        if kind == "end":
            return taken
        if kind == "set_variable":
            by = step.get("value", 1)
            name = step["variable"]
            if step["operation"] == "set":
                variables[name] = by
            else:
                sign = 1 if step["operation"] == "increment" else -1
                variables[name] = variables.get(name, 0) + sign * by
            step_id = step["next"]
        elif kind == "condition":
            context = {"user": {}, "vars": variables, "bot": {}}
            step_id = next(
                (b["next"] for b in step["branches"] if condition_evaluate(b["if"], context)),
                step["default"],
            )
        else:
            step_id = step["next"]
    raise AssertionError(f"accepted loop ran {limit} steps from {start}: {definition}")


@settings(max_examples=600, deadline=None)
@given(graphs, st.integers(-20, 20), st.integers(-20, 20))
def test_every_loop_publishing_accepts_ends(steps, n, m):
    definition = _definition(steps)
    try:
        workflow_validate(definition)
    except WorkflowValidationError:
        return  # refused (a loop without a bound, unreachable steps, ...): fine
    _run(definition, {"n": n, "m": m})
