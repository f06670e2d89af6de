"""Reading the workflow editor's posted form back into a definition and triggers.

:func:`editor_parse` turns the form into a definition and triggers, with readable
errors per field; anything the editor does not know about a step (fields added by
hand in the JSON editor) is kept as it was. :func:`step_add` adds a new step card.
The form itself is drawn by :mod:`workflows.editor`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from botplatform.jsoncheck import json_text_problem
from workflows.editor import (
    MAX_ROWS,
    TRIGGER_KNOWN,
    TRIGGER_VALUE_KEY,
    step_fields,
)
from workflows.engine.definition import STEP_ID_RE
from workflows.engine.numbers import NOT_A_NUMBER, NumberError, number_parse, number_plain
from workflows.engine.steps.base import FieldSpec as Field

# --- Reading the posted form --------------------------------------------------------


@dataclass
class Parsed:
    definition: dict
    triggers: list
    errors: dict[str, str] = field(default_factory=dict)  # input name -> message
    renamed: dict[str, str] = field(default_factory=dict)


def _get(post, key: str) -> str:
    value = post.get(key, "")
    return value.strip() if isinstance(value, str) else ""


def _number(raw: str, *, integer: bool) -> int | float:
    """Through the bounded parser: "1e400" is an error, not an infinity in the draft."""
    try:
        number = number_parse(raw.replace(",", "."))
    except NumberError as exc:
        if exc.args[0] == NOT_A_NUMBER:
            raise ValueError from None
        raise ValueError(f"The number {exc}") from None
    if integer and number != number.to_integral_value():
        raise ValueError
    return number_plain(number)


def _localized(raw: str) -> str | dict:
    """A text written as a JSON object ({"en": ..., "ru": ...}) is its per-language
    versions (the editor shows it the same way); anything else is the text itself."""
    if not raw.lstrip().startswith("{") or json_text_problem(raw):
        return raw
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if isinstance(value, dict) else raw


def _set_nested(step: dict, name: str, value: Any) -> None:
    if "." in name:
        head, tail = name.split(".", 1)
        step.setdefault(head, {})[tail] = value
    else:
        step[name] = value


def _parse_field(post, prefix: str, spec: Field, step: dict, errors: dict) -> None:
    key = f"{prefix}-{spec.name}"
    raw = _get(post, key) if spec.kind not in {"template", "json"} else post.get(key, "")
    if spec.kind == "bool":
        if post.get(key):
            step[spec.name] = True
        return
    if spec.kind == "buttons":
        rows = _parse_buttons(post, prefix, errors)
        if rows:
            step["buttons"] = rows
        return
    if spec.kind == "branches":
        step["branches"] = _parse_branches(post, prefix, errors)
        return
    if spec.kind == "template":
        raw = raw.replace("\r\n", "\n")
        if raw.strip():
            step[spec.name] = _localized(raw) if getattr(spec, "localized", False) else raw
        return
    if not raw:
        return
    try:
        if spec.kind == "int":
            value: Any = _number(raw, integer=True)
        elif spec.kind == "number":
            value = _number(raw, integer=False)
        elif spec.kind in {"amount", "value"}:
            value = raw
            if re.fullmatch(r"-?\d+(\.\d+)?", raw):
                value = _number(raw, integer=False)
        elif spec.kind == "keyboard":
            value = [
                [cell.strip() for cell in line.split("|") if cell.strip()]
                for line in raw.splitlines()
                if line.strip()
            ]
        elif spec.kind == "pairs":
            value = {}
            for line in raw.splitlines():
                if not line.strip():
                    continue
                name, sep, rest = line.partition(":")
                if not sep or not name.strip():
                    raise ValueError("write each line as “name: value”")
                value[name.strip()] = rest.strip()
        elif spec.kind == "json":
            problem = json_text_problem(raw)
            if problem:
                errors[key] = problem
                return
            value = json.loads(raw) if raw.strip() else None
            if value is None:
                return
        else:
            value = _localized(raw) if getattr(spec, "localized", False) else raw
    except json.JSONDecodeError as exc:
        errors[key] = f"This is not valid JSON: {exc.msg} (line {exc.lineno})."
        return
    except ValueError as exc:
        message = str(exc) if str(exc) and "could not convert" not in str(exc) else ""
        if spec.kind == "int":
            errors[key] = message or "Enter a whole number, e.g. 60."
        elif spec.kind == "number":
            errors[key] = message or "Enter a number, e.g. 1.5."
        else:
            errors[key] = (message or "This value cannot be read.").capitalize() + "."
        return
    _set_nested(step, spec.name, value)


def _parse_buttons(post, prefix: str, errors: dict) -> list[list[dict]]:
    rows: dict[int, list[dict]] = {}
    for index in range(MAX_ROWS):
        base = f"{prefix}-btn{index}"
        if f"{base}-text" not in post:
            break
        text = _get(post, f"{base}-text")
        kind = _get(post, f"{base}-kind") or "next"
        target = _get(post, f"{base}-next") if kind == "next" else _get(post, f"{base}-value")
        if not text and not target:
            continue
        if not text:
            errors[f"{base}-text"] = "A button needs a label."
            continue
        try:
            row = max(1, int(_get(post, f"{base}-row") or 1))
        except ValueError:
            errors[f"{base}-row"] = "The row is a number: 1, 2, 3…"
            continue
        button = {"text": _localized(text)}
        if target:
            button[kind if kind in {"next", "url", "data"} else "next"] = target
        rows.setdefault(row, []).append(button)
    return [rows[number] for number in sorted(rows)]


def _parse_branches(post, prefix: str, errors: dict) -> list[dict]:
    branches = []
    for index in range(MAX_ROWS):
        base = f"{prefix}-br{index}"
        if f"{base}-if" not in post:
            break
        condition = _get(post, f"{base}-if")
        target = _get(post, f"{base}-next")
        if not condition and not target:
            continue
        branch = {"if": condition}
        if target:
            branch["next"] = target
        branches.append(branch)
    return branches


def _parse_triggers(post, old: list, errors: dict) -> list:
    triggers = []
    for index in range(MAX_ROWS):
        base = f"t{index}"
        if f"{base}-type" not in post:
            break
        kind = _get(post, f"{base}-type")
        if not kind or post.get(f"{base}-delete"):
            continue
        original = old[index] if index < len(old) and isinstance(old[index], dict) else {}
        trigger = {k: v for k, v in original.items() if k not in TRIGGER_KNOWN}
        trigger["type"] = kind
        value = _get(post, f"{base}-value")
        if kind == "callback":
            trigger["prefix" if post.get(f"{base}-prefix") else "data"] = value
        elif kind in TRIGGER_VALUE_KEY and (value or kind != "level_up"):
            trigger[TRIGGER_VALUE_KEY[kind]] = value.lstrip("/") if kind == "command" else value
        if kind == "command":
            payload = _get(post, f"{base}-payload_prefix")
            if payload:
                trigger["payload_prefix"] = payload
            if post.get(f"{base}-interrupt"):
                trigger["interrupt"] = True
        triggers.append(trigger)
    return triggers


def _rename(value: Any, renamed: dict[str, str]) -> Any:
    return renamed.get(value, value) if isinstance(value, str) else value


def _apply_renames(step: dict, renamed: dict[str, str]) -> None:
    step_type = step.get("type")
    for spec in step_fields(step_type):
        if spec.kind == "step" and spec.name in step:
            step[spec.name] = _rename(step[spec.name], renamed)
    for row in step.get("buttons") or []:
        for button in row if isinstance(row, list) else [row]:
            if isinstance(button, dict) and "next" in button:
                button["next"] = _rename(button["next"], renamed)
    for branch in step.get("branches") or []:
        if isinstance(branch, dict) and "next" in branch:
            branch["next"] = _rename(branch["next"], renamed)


def editor_parse(post, *, draft: dict, triggers: list) -> Parsed:
    """The posted editor form as a definition and triggers (errors keyed by input name)."""
    old_steps = draft.get("steps") if isinstance(draft.get("steps"), dict) else {}
    errors: dict[str, str] = {}
    steps: dict[str, dict] = {}
    renamed: dict[str, str] = {}
    for index in range(MAX_ROWS * 10):
        prefix = f"s{index}"
        if f"{prefix}-_type" not in post:
            break
        original_id = _get(post, f"{prefix}-_orig")
        if post.get(f"{prefix}-_delete"):
            renamed[original_id] = ""
            continue
        step_id = _get(post, f"{prefix}-_id")
        step_type = _get(post, f"{prefix}-_type")
        if not STEP_ID_RE.match(step_id):
            errors[f"{prefix}-_id"] = "A step name is 1-64 letters, digits, _ or - (no spaces)."
            step_id = original_id or f"step{index}"
        elif step_id in steps:
            errors[f"{prefix}-_id"] = f"Another step is already called “{step_id}”."
        original = old_steps.get(original_id) if isinstance(old_steps, dict) else None
        original = original if isinstance(original, dict) else {}
        specs = step_fields(step_type)
        known = {spec.name.split(".")[0] for spec in specs}
        step: dict[str, Any] = {"type": step_type}
        for key, value in original.items():
            if key != "type" and key not in known:
                step[key] = value  # fields this editor does not show stay as they were
        if isinstance(original.get("validate"), dict):
            extra = {
                k: v
                for k, v in original["validate"].items()
                if k not in {"type", "min", "max", "pattern", "message"}
            }
            if extra:
                step["validate"] = dict(extra)
        for spec in specs:
            _parse_field(post, prefix, spec, step, errors)
        steps[step_id] = step
        if original_id and original_id != step_id:
            renamed[original_id] = step_id
    for step in steps.values():
        _apply_renames(step, renamed)
    start = _rename(_get(post, "start"), renamed)
    if not start or start not in steps:
        start = next(iter(steps), "")
    definition: dict[str, Any] = {"start": start, "steps": steps}
    if isinstance(draft.get("description"), str):
        definition["description"] = draft["description"]
    return Parsed(
        definition=definition,
        triggers=_parse_triggers(post, triggers if isinstance(triggers, list) else [], errors),
        errors=errors,
        renamed=renamed,
    )


def step_add(definition: dict, *, step_type: str, step_id: str = "") -> tuple[dict, str]:
    """A copy of ``definition`` with a new step of ``step_type`` (a free id if none given)."""
    steps = dict(definition.get("steps") or {})
    if not step_id or step_id in steps or not STEP_ID_RE.match(step_id):
        number = len(steps) + 1
        while f"{step_type}_{number}" in steps:
            number += 1
        step_id = f"{step_type}_{number}"
    step: dict[str, Any] = {"type": step_type}
    if step_type in {"message", "input"}:
        step["text"] = ""
    if step_type == "input":
        step["variable"] = "answer"
    if step_type == "condition":
        step["branches"] = []
    if step_type == "bonus":
        step.update(operation="earn", amount=10)
    steps[step_id] = step
    result = {**definition, "steps": steps}
    if not result.get("start") or result["start"] not in steps:
        result["start"] = step_id
    return result, step_id
