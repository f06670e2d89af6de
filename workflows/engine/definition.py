"""The workflow JSON format, read into a typed object.

::

    {"start": "welcome",
     "steps": {"welcome": {"type": "message", "text": "Hi!", "next": "done"},
               "done": {"type": "end"}}}

Steps stay plain dicts (each step type reads its own fields); this module checks
the shape every definition shares. See ``docs/workflows.md`` for the full format.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

STEP_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Definition:
    start: str
    steps: dict[str, dict]

    def step(self, step_id: str) -> dict | None:
        return self.steps.get(step_id)


def definition_shape_problems(data: Any) -> list[tuple[str, str]]:
    """(step, message) for problems of the overall shape; empty when it is usable."""
    if not isinstance(data, dict):
        return [("", "the definition must be a JSON object with 'start' and 'steps'")]
    problems = []
    steps = data.get("steps")
    if not isinstance(steps, dict) or not steps:
        problems.append(("", "'steps' must be a non-empty object of step id → step"))
        steps = {}
    start = data.get("start")
    if not isinstance(start, str) or not start:
        problems.append(("", "'start' (the id of the first step) is missing"))
    elif steps and start not in steps:
        problems.append(("", f"'start' names the step '{start}', which does not exist"))
    for step_id, step in steps.items():
        if not STEP_ID_RE.match(step_id):
            problems.append((step_id, "a step id is 1-64 letters, digits, '_' or '-' (no spaces)"))
        if not isinstance(step, dict):
            problems.append((step_id, "a step must be an object with a 'type'"))
        elif not isinstance(step.get("type"), str):
            problems.append((step_id, "the step has no 'type'"))
    unknown = set(data) - {"start", "steps", "description"}
    if unknown:
        problems.append(("", f"unknown top-level field(s): {', '.join(sorted(unknown))}"))
    return problems


def definition_parse(data: dict) -> Definition:
    """A :class:`Definition` of an already validated definition dict."""
    return Definition(start=data["start"], steps=data["steps"])


def definition_checksum(data: Any) -> str:
    """SHA-256 of the canonical JSON: the same workflow always gives the same sum."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
