"""The workflow editor's forms: a definition as step cards, and back.

Operators never see JSON here. Every step type declares its fields, labels and
help texts with its code (``fields`` in workflows/engine/steps/); fields that name
another step are selects of the workflow's steps. :func:`editor_parse` turns the
posted form into a definition and triggers, with readable errors per field; anything
the editor does not know about a step (fields added by hand in the JSON editor) is
kept as it was (publishing refuses fields the step type does not declare).
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from workflows.engine.steps import STEP_TYPES
from workflows.engine.steps.base import FieldSpec as Field
from workflows.engine.steps.message import button_rows

MAX_ROWS = 60  # buttons, branches, triggers, steps: far above any sane workflow


def step_fields(step_type: Any) -> tuple[Field, ...]:
    """The inputs of a step card, as the step type declares them (none if unknown)."""
    handler = STEP_TYPES.get(step_type) if isinstance(step_type, str) else None
    return handler.editor_fields() if handler else ()


def _type_label(step_type: Any, default: str) -> str:
    handler = STEP_TYPES.get(step_type) if isinstance(step_type, str) else None
    return handler.label if handler else default


TRIGGER_TYPES = (
    ("command", "Command, e.g. /start"),
    ("text", "Exact text"),
    ("regex", "Text matching a pattern"),
    ("callback", "Button data"),
    ("level_up", "Reached a level"),
    ("event", "An event from the API (by name)"),
    ("fallback", "Anything else"),
)
TRIGGER_VALUE_KEY = {
    "command": "command",
    "text": "text",
    "regex": "pattern",
    "level_up": "level",
    "event": "name",
}
TRIGGER_KNOWN = {"type", "command", "text", "pattern", "data", "prefix", "level", "name"}
TRIGGER_KNOWN |= {"payload_prefix", "interrupt"}

BUTTON_KINDS = (("next", "Go to step"), ("url", "Open a link"), ("data", "Button data"))
EXTRA_SLOTS = 2


def nested_get(step: dict, name: str) -> Any:
    if "." in name:
        head, tail = name.split(".", 1)
        inner = step.get(head)
        return inner.get(tail) if isinstance(inner, dict) else None
    return step.get(name)


# --- Rendering ----------------------------------------------------------------------


def _step_summary(step: Any) -> str:
    if not isinstance(step, dict):
        return ""
    text = step.get("text") or step.get("url") or step.get("workflow") or ""
    text = re.sub(r"<[^>]+>", "", str(text)).replace("\n", " ")
    return text[:40] + ("…" if len(text) > 40 else "")


def step_choices(steps: dict) -> list[tuple[str, str]]:
    return [
        (step_id, f"{step_id} — {_type_label(step.get('type'), step.get('type'))}")
        if isinstance(step, dict)
        else (step_id, step_id)
        for step_id, step in steps.items()
    ]


def _select(name: str, choices, value: Any, *, blank: str | None = None, attrs: str = "") -> str:
    options = []
    values = {str(v) for v, _ in choices}
    if blank is not None:
        options.append(format_html('<option value="">{}</option>', blank))
    if value not in (None, "") and str(value) not in values:
        options.append(
            format_html('<option value="{}" selected>{} (missing!)</option>', value, value)
        )
    for option_value, label in choices:
        options.append(
            format_html(
                '<option value="{}"{}>{}</option>',
                option_value,
                mark_safe(" selected") if str(option_value) == str(value) else "",
                label,
            )
        )
    return format_html(
        '<select name="{}" id="id_{}"{}>{}</select>',
        name,
        name,
        mark_safe(attrs),  # noqa: S308 - constant attributes from this module
        mark_safe("".join(options)),  # noqa: S308 - built with format_html
    )


def _input(name: str, value: Any, *, kind: str = "text", size: int = 30, placeholder="") -> str:
    return format_html(
        '<input type="{}" name="{}" id="id_{}" value="{}" size="{}" placeholder="{}">',
        kind,
        name,
        name,
        "" if value is None else value,
        size,
        placeholder,
    )


def _textarea(name: str, value: str, rows: int = 3) -> str:
    return format_html(
        '<textarea name="{}" id="id_{}" rows="{}" cols="70">{}</textarea>', name, name, rows, value
    )


def _display_text(value: Any) -> Any:
    """A per-language label as its JSON object (parsed back by the form), not a repr."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value


def _display(spec: Field, value: Any) -> Any:
    if value is None:
        return ""
    if spec.kind == "keyboard" and isinstance(value, list):
        return "\n".join(" | ".join(map(str, row)) for row in value if isinstance(row, list))
    if spec.kind == "pairs" and isinstance(value, dict):
        return "\n".join(f"{k}: {v}" for k, v in value.items())
    if spec.kind == "json":
        return json.dumps(value, ensure_ascii=False, indent=2)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value


def _widget(spec: Field, prefix: str, value: Any, ctx: dict) -> SafeString:
    name = f"{prefix}-{spec.name}"
    if spec.kind == "bool":
        return format_html(
            '<input type="checkbox" name="{}" id="id_{}" value="1"{}>',
            name,
            name,
            mark_safe(" checked") if value else "",
        )
    if spec.kind == "step":
        return _select(name, ctx["step_choices"], value, blank="— (none: the conversation ends)")
    if spec.kind == "workflow":
        return _select(name, ctx["workflow_choices"], value, blank="— choose a workflow")
    if spec.kind == "choice":
        return _select(name, spec.choices, value if value is not None else spec.choices[0][0])
    if spec.kind in {"template", "keyboard", "pairs", "json"}:
        rows = 4 if spec.kind in {"template", "json"} else 2
        return _textarea(name, _display(spec, value), rows=rows)
    if spec.kind in {"int", "number"}:
        return _input(name, value, size=8)
    return _input(name, _display(spec, value), size=40)


def _buttons_html(prefix: str, step: dict, ctx: dict, errors: dict) -> SafeString:
    rows = button_rows(step)
    cells = [(number, button) for number, row in enumerate(rows, start=1) for button in row]
    last_row = len(rows)
    cells += [(last_row + 1, {}) for _ in range(EXTRA_SLOTS)]
    lines = []
    for index, (row, button) in enumerate(cells):
        base = f"{prefix}-btn{index}"
        kind = next((k for k in ("next", "url", "data") if k in button), "next")
        error = "".join(
            format_html('<div class="errornote">{}</div>', errors[k])
            for k in (f"{base}-text", f"{base}-row")
            if k in errors
        )
        lines.append(
            format_html(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td></tr>",
                _input(
                    f"{base}-text",
                    _display_text(button.get("text", "")),
                    size=18,
                    placeholder="Label",
                ),
                _input(f"{base}-row", row, kind="number", size=3),
                _select(f"{base}-kind", BUTTON_KINDS, kind, attrs=' class="btn-kind"'),
                _select(
                    f"{base}-next",
                    ctx["step_choices"],
                    button.get("next", ""),
                    blank="— step",
                ),
                _input(
                    f"{base}-value",
                    button.get("url") or button.get("data") or "",
                    size=22,
                    placeholder="https://… or data",
                ),
                mark_safe(error),  # noqa: S308 - built with format_html
            )
        )
    return format_html(
        '<table class="editor-rows"><thead><tr><th>Label</th><th>Row</th><th>Does</th>'
        "<th>Step</th><th>Link or data</th></tr></thead><tbody>{}</tbody></table>"
        '<p class="help">Empty lines are ignored. Buttons with the same row number sit '
        "side by side. A “go to step” button makes the message wait for a press.</p>",
        mark_safe("".join(lines)),  # noqa: S308
    )


def _branches_html(prefix: str, step: dict, ctx: dict) -> SafeString:
    branches = [b for b in (step.get("branches") or []) if isinstance(b, dict)]
    branches += [{} for _ in range(EXTRA_SLOTS)]
    lines = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td></tr>",
        (
            (
                _input(
                    f"{prefix}-br{index}-if",
                    branch.get("if", ""),
                    size=50,
                    placeholder='vars.city == "Paris"',
                ),
                _select(
                    f"{prefix}-br{index}-next",
                    ctx["step_choices"],
                    branch.get("next", ""),
                    blank="— step",
                ),
            )
            for index, branch in enumerate(branches)
        ),
    )
    return format_html(
        '<table class="editor-rows"><thead><tr><th>If</th><th>go to</th></tr></thead>'
        "<tbody>{}</tbody></table>"
        '<p class="help">The first branch whose condition holds wins. Conditions: ==, !=, &lt;, '
        "&gt;, contains, in, is set, and, or, not; values: user.balance, user.level, "
        'vars.NAME, numbers, "texts".</p>',
        lines,
    )


def step_order(definition: dict) -> list[str]:
    """Steps as the conversation meets them: from the start, breadth first; the rest last."""
    steps = definition["steps"]
    order: list[str] = []
    frontier = [definition.get("start")]
    while frontier:
        following = []
        for step_id in frontier:
            if step_id in steps and step_id not in order:
                order.append(step_id)
                step = steps[step_id]
                handler = STEP_TYPES.get(step.get("type")) if isinstance(step, dict) else None
                following += [t for _, t in handler.targets(step)] if handler else []
        frontier = following
    return order + [step_id for step_id in steps if step_id not in order]


def editor_context(
    *,
    definition: Any,
    triggers: Any,
    workflows: list[str],
    errors: dict[str, str] | None = None,
    step_errors: dict[str, list[str]] | None = None,
) -> dict:
    """What the editor template shows: step cards with their widgets and errors."""
    errors = errors or {}
    step_errors = step_errors or {}
    if not isinstance(definition, dict) or not isinstance(definition.get("steps"), dict):
        return {"editable": False}
    steps = definition["steps"]
    ctx = {
        "step_choices": step_choices({k: steps[k] for k in step_order(definition)}),
        "workflow_choices": [(slug, slug) for slug in workflows],
    }
    cards = []
    for index, step_id in enumerate(step_order(definition)):
        step = steps[step_id]
        if not isinstance(step, dict):
            return {"editable": False}
        prefix = f"s{index}"
        step_type = step.get("type", "")
        fields = []
        for spec in step_fields(step_type):
            key = f"{prefix}-{spec.name}"
            if spec.kind == "buttons":
                widget = _buttons_html(prefix, step, ctx, errors)
            elif spec.kind == "branches":
                widget = _branches_html(prefix, step, ctx)
            else:
                widget = _widget(spec, prefix, nested_get(step, spec.name), ctx)
            wide = spec.kind in {"buttons", "branches"}
            fields.append(
                {
                    "name": key,
                    "label": spec.label,
                    "help": "" if wide else spec.help,  # the row tables carry their own help
                    "widget": widget,
                    "error": errors.get(key, ""),
                    "wide": wide,
                }
            )
        cards.append(
            {
                "index": index,
                "prefix": prefix,
                "id": step_id,
                "type": step_type,
                "type_label": _type_label(step_type, f"Unknown type “{step_type}”"),
                "known": step_type in STEP_TYPES,
                "is_start": definition.get("start") == step_id,
                "fields": fields,
                "id_error": errors.get(f"{prefix}-_id", ""),
                "errors": step_errors.get(step_id, []),
            }
        )
    trigger_rows = []
    for index, trigger in enumerate(
        [t for t in (triggers if isinstance(triggers, list) else []) if isinstance(t, dict)] + [{}]
    ):
        base = f"t{index}"
        kind = trigger.get("type", "")
        value = trigger.get(TRIGGER_VALUE_KEY.get(kind, ""), "")
        if kind == "callback":
            value = trigger.get("data") or trigger.get("prefix") or ""
        trigger_rows.append(
            {
                "type": _select(f"{base}-type", TRIGGER_TYPES, kind, blank="— add a trigger"),
                "value": _input(f"{base}-value", value, size=24),
                "payload_prefix": _input(
                    f"{base}-payload_prefix",
                    trigger.get("payload_prefix", ""),
                    size=10,
                    placeholder="e.g. ref_",
                ),
                "interrupt": format_html(
                    '<input type="checkbox" name="{}-interrupt" value="1"{}>',
                    base,
                    mark_safe(" checked") if trigger.get("interrupt") else "",
                ),
                "prefix": format_html(
                    '<input type="checkbox" name="{}-prefix" value="1"{}>',
                    base,
                    mark_safe(" checked") if "prefix" in trigger else "",
                ),
                "delete": format_html('<input type="checkbox" name="{}-delete" value="1">', base)
                if trigger
                else "",
                "errors": step_errors.get(f"trigger {index + 1}", []),
            }
        )
    return {
        "editable": True,
        "cards": cards,
        "start_select": _select("start", ctx["step_choices"], definition.get("start", "")),
        "trigger_rows": trigger_rows,
        "general_errors": [
            message
            for where, messages in step_errors.items()
            if where not in steps and not where.startswith("trigger ")
            for message in messages
        ],
        "step_types": [(name, handler.label) for name, handler in STEP_TYPES.items()],
    }
