"""The shape every workflow definition shares, and its checksum.

::

    {"start": "welcome",
     "steps": {"welcome": {"type": "message", "text": "Hi!", "next": "done"},
               "done": {"type": "end"}}}

Steps stay plain dicts (each step type reads its own fields and declares their
schema); this module checks the shape around them. See ``docs/workflows.md``.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

STEP_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


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
        problems.append(("", f"'start' names the step '{start[:64]}', which does not exist"))
    for step_id, step in steps.items():
        if not STEP_ID_RE.match(step_id):
            problems.append((step_id, "a step id is 1-64 letters, digits, '_' or '-' (no spaces)"))
        if not isinstance(step, dict):
            problems.append((step_id, "a step must be an object with a 'type'"))
        elif not isinstance(step.get("type"), str):
            problems.append((step_id, "the step has no 'type'"))
    unknown = set(data) - {"start", "steps", "description"}
    if unknown:
        names = ", ".join(str(name)[:64] for name in sorted(unknown, key=str)[:5])
        problems.append(("", f"unknown top-level field(s): {names}"))
    return problems


def definition_checksum(data: Any) -> str:
    """SHA-256 of the canonical JSON: the same workflow always gives the same sum."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
