"""What changes between two versions, in the operator's words (not a JSON diff).

Steps added, removed and changed; for a changed step each field that differs,
labelled as in the step editor, with its old and new text (real line breaks, no
JSON escapes); the first step; triggers added and removed, described as the editor
names them ("Exact text: coffee").
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from workflows.editor import TRIGGER_TYPES
from workflows.engine.steps import STEP_TYPES

_TRIGGER_LABELS = dict(TRIGGER_TYPES)
_TEXT_LIMIT = 4000  # a field's text as shown; longer values are cut with a note


@dataclass(frozen=True)
class FieldChange:
    label: str
    old: str  # "" when the field was not set
    new: str


@dataclass(frozen=True)
class StepChange:
    step: str
    kind: str  # "added", "removed" or "changed"
    type_label: str
    fields: tuple[FieldChange, ...] = ()


@dataclass(frozen=True)
class VersionDiff:
    steps: tuple[StepChange, ...] = ()
    general: tuple[FieldChange, ...] = ()  # first step, description
    triggers_added: tuple[str, ...] = ()
    triggers_removed: tuple[str, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not (self.steps or self.general or self.triggers_added or self.triggers_removed)

    def summary(self) -> str:
        """One line: "1 step added, 2 changed; 1 trigger added"."""
        parts = [
            f"{self.counts[kind]} step{'s' if self.counts[kind] != 1 else ''} {kind}"
            for kind in ("added", "removed", "changed")
            if self.counts.get(kind)
        ]
        for kind, triggers in (("added", self.triggers_added), ("removed", self.triggers_removed)):
            if triggers:
                parts.append(f"{len(triggers)} trigger{'s' if len(triggers) != 1 else ''} {kind}")
        if self.general:
            parts.append(", ".join(change.label.lower() for change in self.general) + " changed")
        return "; ".join(parts) or "no changes"


def _cut(text: str) -> str:
    if len(text) <= _TEXT_LIMIT:
        return text
    return text[:_TEXT_LIMIT] + f"… ({len(text) - _TEXT_LIMIT} more characters)"


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _button_text(button: Any) -> str:
    if not isinstance(button, dict):
        return _compact(button)
    label = str(button.get("text", ""))
    if "next" in button:
        return f"[{label}] → step {button['next']}"
    if "url" in button:
        return f"[{label}] → link {button['url']}"
    if "data" in button:
        return f"[{label}] → button data {button['data']}"
    return f"[{label}]"


def value_text(kind: str, value: Any) -> str:
    """A field's value as an operator reads it ("" when unset)."""
    if value is None or value == "" or value == [] or value == {}:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if kind == "buttons" and isinstance(value, list):
        rows = [row if isinstance(row, list) else [row] for row in value]
        return "\n".join("   ".join(_button_text(b) for b in row) for row in rows)
    if kind == "branches" and isinstance(value, list):
        return "\n".join(
            f"if {b.get('if', '')} → step {b.get('next', '(none)')}"
            if isinstance(b, dict)
            else _compact(b)
            for b in value
        )
    if kind == "keyboard" and isinstance(value, list):
        return "\n".join(
            " | ".join(map(str, row)) if isinstance(row, list) else str(row) for row in value
        )
    if kind == "pairs" and isinstance(value, dict):
        return "\n".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, int | float):
        return str(value)
    if kind == "json":
        return _cut(json.dumps(value, ensure_ascii=False, indent=2))
    return _cut(_compact(value))


def _get(step: dict, name: str) -> Any:
    head, _, tail = name.partition(".")
    value = step.get(head)
    if tail:
        return value.get(tail) if isinstance(value, dict) else None
    return value


def _fields_of(step: dict) -> list[tuple[str, str, Any]]:
    """(key, label, kind) per field the step has or its type knows, editor order first."""
    handler = STEP_TYPES.get(step.get("type")) if isinstance(step.get("type"), str) else None
    specs = handler.editor_fields() if handler else ()
    seen = {"type"}
    fields = []
    for spec in specs:
        fields.append((spec.name, spec.label, spec.kind))
        seen.add(spec.name)
        seen.add(spec.name.split(".")[0])
    for key in step:
        if key not in seen:
            fields.append((key, key, "json"))
    return fields


def _type_label(step: Any) -> str:
    kind = step.get("type") if isinstance(step, dict) else None
    handler = STEP_TYPES.get(kind) if isinstance(kind, str) else None
    return handler.label if handler else f"Unknown type “{kind}”"


def _step_fields(old: dict, new: dict) -> tuple[FieldChange, ...]:
    changes = []
    if old.get("type") != new.get("type"):
        changes.append(FieldChange("Type", _type_label(old), _type_label(new)))
    listed = set()
    for key, label, kind in _fields_of(new) + _fields_of(old):
        if key in listed:
            continue
        listed.add(key)
        before = value_text(kind, _get(old, key))
        after = value_text(kind, _get(new, key))
        if before != after:
            changes.append(FieldChange(label, before, after))
    if not changes and old != new:
        # Nested fields the editor does not show (e.g. extra keys under "validate").
        changes.append(FieldChange("Other settings", _compact(old), _compact(new)))
    return tuple(changes)


def trigger_text(trigger: Any) -> str:
    """A trigger as the editor names it: "Exact text: coffee", "Command /start"."""
    return _cut(_trigger_text(trigger))


def _trigger_text(trigger: Any) -> str:
    if not isinstance(trigger, dict):
        return _compact(trigger)
    kind = trigger.get("type")
    known = {"type", "command", "text", "pattern", "data", "prefix", "level"}
    known |= {"payload", "payload_prefix", "interrupt", "ignore_case"}
    if kind == "command":
        text = f"Command /{str(trigger.get('command', '')).lstrip('/')}"
        if "payload" in trigger:
            text += f" with the deep-link payload “{trigger['payload']}”"
        if trigger.get("payload_prefix"):
            text += f" with a deep-link payload starting with “{trigger['payload_prefix']}”"
        if trigger.get("interrupt"):
            text += " (interrupts a waiting conversation)"
    elif kind == "text":
        text = f"Exact text: {trigger.get('text', '')}"
    elif kind == "regex":
        text = f"Text matching the pattern: {trigger.get('pattern', '')}"
    elif kind == "callback":
        if "data" in trigger:
            text = f"Button data: {trigger['data']}"
        else:
            text = f"Button data starting with: {trigger.get('prefix', '')}"
    elif kind == "level_up":
        level = trigger.get("level")
        text = f"Reached the level {level}" if level else "Reached any level"
    elif kind == "fallback":
        text = "Anything else (fallback)"
    else:
        return _compact(trigger)
    if kind in {"text", "regex"} and trigger.get("ignore_case") is False:
        text += " (case-sensitive)"
    extra = {k: v for k, v in trigger.items() if k not in known}
    if extra:
        text += f" {_compact(extra)}"
    return text


def _trigger_changes(old: Any, new: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    before = Counter(_compact(t) for t in (old if isinstance(old, list) else []))
    after = Counter(_compact(t) for t in (new if isinstance(new, list) else []))
    added = [json.loads(t) for t in (after - before).elements()]
    removed = [json.loads(t) for t in (before - after).elements()]
    return tuple(map(trigger_text, added)), tuple(map(trigger_text, removed))


def version_diff(
    old_definition: Any, old_triggers: Any, new_definition: Any, new_triggers: Any
) -> VersionDiff:
    """The changes from (old definition, triggers) to the new ones; old may be None."""
    old_steps = old_definition.get("steps") if isinstance(old_definition, dict) else None
    new_steps = new_definition.get("steps") if isinstance(new_definition, dict) else None
    old_steps = old_steps if isinstance(old_steps, dict) else {}
    new_steps = new_steps if isinstance(new_steps, dict) else {}
    steps: list[StepChange] = []
    for step_id, step in new_steps.items():
        if step_id not in old_steps:
            shown = step if isinstance(step, dict) else {}
            fields = _step_fields({"type": shown.get("type")}, shown)
            steps.append(StepChange(step_id, "added", _type_label(step), fields))
    for step_id, step in old_steps.items():
        if step_id not in new_steps:
            steps.append(StepChange(step_id, "removed", _type_label(step)))
    for step_id, step in new_steps.items():
        before = old_steps.get(step_id)
        if step_id in old_steps and before != step:
            before = before if isinstance(before, dict) else {"value": before}
            after = step if isinstance(step, dict) else {"value": step}
            steps.append(
                StepChange(step_id, "changed", _type_label(step), _step_fields(before, after))
            )
    general = []
    if old_definition is not None:  # a first version lists its steps as added already
        old_def = old_definition if isinstance(old_definition, dict) else {}
        new_def = new_definition if isinstance(new_definition, dict) else {}
        for key, label in (("start", "First step"), ("description", "Description")):
            before = value_text("line", old_def.get(key))
            after = value_text("line", new_def.get(key))
            if before != after:
                general.append(FieldChange(label, before, after))
    added, removed = _trigger_changes(old_triggers, new_triggers)
    counts = Counter(change.kind for change in steps)
    return VersionDiff(
        steps=tuple(steps),
        general=tuple(general),
        triggers_added=added,
        triggers_removed=removed,
        counts=dict(counts),
    )
