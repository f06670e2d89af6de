"""The workflow file's JSON Schema, built from the step-type registry.

Each step type declares its fields (:class:`~workflows.engine.steps.base.FieldSpec`)
next to its code; this module assembles them, with the file's own fields and the
triggers, into the schema that ``docs/workflow.schema.json`` holds (written by
``manage.py workflowschema --write``, checked by the test suite). The validator uses
the same schema at publish time, through :func:`step_shape_problems`, which turns
jsonschema's errors into sentences an operator can act on.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from workflows.engine.definition import STEP_ID_RE
from workflows.engine.steps import STEP_TYPES
from workflows.engine.steps.base import CALLBACK_DATA_LIMIT, FieldSpec, localized_schema

SCHEMA_ID = "https://botplatform.example/workflow.schema.json"
MAX_PROBLEMS_PER_STEP = 20

# How a message names what a $ref'd value must be.
_REF_PHRASES = {
    "#/$defs/stepRef": "the id of a step (1-64 letters, digits, _ or -)",
    "#/$defs/button": 'a button: {"text": ...} with one of "next", "url" or "data"',
}
_TYPE_PHRASES = {
    "integer": "a whole number",
    "number": "a number",
    "string": "a text",
    "boolean": "true or false",
    "array": "a list",
    "object": "an object",
    "null": "null",
}


def trigger_kind_schemas() -> dict[str, dict[str, Any]]:
    """The schema of each kind of trigger, by kind: THE trigger rules. The publish
    check (:func:`trigger_shape_problems`) and the file's schema both come from here."""

    def kind(name: str, properties: dict, required: tuple[str, ...] = ()) -> dict:
        return {
            "type": "object",
            "properties": {"type": {"const": name}, **properties},
            "required": ["type", *required],
            "additionalProperties": False,
        }

    callback_data = {
        "type": "string",
        "minLength": 1,
        "maxLength": CALLBACK_DATA_LIMIT,
        "not": {"pattern": "^w:"},
        "description": f"callback data of at most {CALLBACK_DATA_LIMIT} bytes, not starting with w:",
    }
    callback = kind("callback", {"data": callback_data, "prefix": callback_data})
    callback["oneOf"] = [{"required": ["data"]}, {"required": ["prefix"]}]
    return {
        "command": kind(
            "command",
            {
                "command": {
                    "type": "string",
                    "pattern": "^/?[A-Za-z0-9_]{1,32}$",
                    "description": '1-32 letters, digits or _, e.g. "start"',
                },
                "payload": {"type": "string"},
                "payload_prefix": {"type": "string"},
                "interrupt": {"type": "boolean"},
            },
            ("command",),
        ),
        "text": kind(
            "text",
            {
                "text": {
                    "type": "string",
                    "pattern": "\\S",
                    "description": "the exact message (not blank)",
                },
                "ignore_case": {"type": "boolean"},
            },
            ("text",),
        ),
        "regex": kind(
            "regex",
            {"pattern": {"type": "string"}, "ignore_case": {"type": "boolean"}},
            ("pattern",),
        ),
        "callback": callback,
        "fallback": kind("fallback", {}),
        "level_up": kind("level_up", {"level": {"type": "string"}}),
        "event": kind(
            "event",
            {
                "name": {
                    "type": "string",
                    "pattern": "^[a-z][a-z0-9_.-]{0,63}$",
                    "description": 'lower-case letters, digits, _ . -, e.g. "order.shipped"',
                },
            },
            ("name",),
        ),
    }


def triggers_schema() -> dict[str, Any]:
    """The schema of one trigger (the file's ``triggers`` is a list of these)."""
    return {"oneOf": list(trigger_kind_schemas().values())}


def _button_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": (
            'a button has a "text" and exactly one of "next" (a step), "url" (a link '
            'starting with https://, http:// or tg://) or "data" (callback data for a '
            "trigger, at most 64 bytes, not starting with w:)"
        ),
        "properties": {
            "text": localized_schema({"type": "string", "minLength": 1}),
            "next": {"$ref": "#/$defs/stepRef"},
            "url": {
                "type": "string",
                "pattern": "^(https?|tg)://",
                "description": "a link starting with https://, http:// or tg://",
            },
            "data": {"type": "string", "maxLength": CALLBACK_DATA_LIMIT, "not": {"pattern": "^w:"}},
        },
        "required": ["text"],
        "additionalProperties": False,
        "oneOf": [{"required": ["next"]}, {"required": ["url"]}, {"required": ["data"]}],
    }


def _definition_schema() -> dict[str, Any]:
    step_id = {"type": "string", "pattern": STEP_ID_RE.pattern}
    return {
        "type": "object",
        "properties": {
            "start": {**step_id, "description": "The id of the first step."},
            "description": {"type": "string"},
            "steps": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": step_id,
                "additionalProperties": {"$ref": "#/$defs/step"},
            },
        },
        "required": ["start", "steps"],
        "additionalProperties": False,
    }


def _step_schema() -> dict[str, Any]:
    """Any step: its ``type`` picks the schema the rest must match."""
    return {
        "type": "object",
        "properties": {"type": {"enum": list(STEP_TYPES)}},
        "required": ["type"],
        "allOf": [
            {
                "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                "then": {"$ref": f"#/$defs/step_{name}"},
            }
            for name in STEP_TYPES
        ],
    }


def _defs() -> dict[str, Any]:
    defs: dict[str, Any] = {
        "stepRef": {"type": "string", "pattern": STEP_ID_RE.pattern},
        "button": _button_schema(),
        "definition": _definition_schema(),
        "step": _step_schema(),
    }
    for name, handler in STEP_TYPES.items():
        defs[f"step_{name}"] = handler.json_schema()
    defs["trigger"] = triggers_schema()
    return defs


def workflow_schema() -> dict[str, Any]:
    """The JSON Schema of a workflow file (``importworkflow`` / ``exportworkflow``)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Workflow file",
        "description": (
            "A workflow as read by `manage.py importworkflow` and written by "
            "`exportworkflow`. See docs/workflows.md. Generated from the step types "
            "(`manage.py workflowschema --write`); do not edit by hand. Publishing "
            "additionally checks the graph (missing or unreachable steps, loops, "
            "variables in templates and conditions)."
        ),
        "type": "object",
        "properties": {
            "format": {"const": 1},
            "slug": {"type": "string", "pattern": "^[-a-zA-Z0-9_]{1,64}$"},
            "name": {"type": "string", "maxLength": 200},
            "description": {"type": "string"},
            "priority": {"type": "integer"},
            "is_active": {"type": "boolean"},
            "triggers": {"type": "array", "items": {"$ref": "#/$defs/trigger"}},
            "definition": {"$ref": "#/$defs/definition"},
        },
        "required": ["slug", "definition"],
        "additionalProperties": False,
        "$defs": _defs(),
    }


def workflow_schema_text() -> str:
    """The schema as committed in ``docs/workflow.schema.json``."""
    return json.dumps(workflow_schema(), indent=2, ensure_ascii=False) + "\n"


# --- Shape problems, in words -----------------------------------------------------


@cache
def _step_validator(step_type: str) -> Draft202012Validator:
    return Draft202012Validator({"$defs": _defs(), "$ref": f"#/$defs/step_{step_type}"})


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def schema_phrase(schema: dict[str, Any]) -> str:
    """What a value matching ``schema`` is, as the end of "… must be ___"."""
    if "$ref" in schema:
        return _REF_PHRASES.get(schema["$ref"], "in the expected form")
    if schema.get("pattern") == STEP_ID_RE.pattern:
        return _REF_PHRASES["#/$defs/stepRef"]
    if schema.get("pattern") and schema.get("description"):
        return schema["description"]
    if "enum" in schema:
        return "one of: " + ", ".join(str(value) for value in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    for key in ("oneOf", "anyOf"):
        if key in schema and "type" not in schema:
            return " or ".join(schema_phrase(option) for option in schema[key])
    kinds = schema.get("type")
    if kinds is None:
        return "a JSON value" if not schema.get("pattern") else "in the expected format"
    kinds = [kinds] if isinstance(kinds, str) else kinds
    phrase = " or ".join(_TYPE_PHRASES.get(kind, kind) for kind in kinds)
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        phrase += f" from {_number(low)} to {_number(high)}"
    elif low is not None:
        phrase += f" of at least {_number(low)}"
    elif high is not None:
        phrase += f" of at most {_number(high)}"
    if schema.get("exclusiveMinimum") is not None:
        phrase += f" above {_number(schema['exclusiveMinimum'])}"
    if schema.get("minLength") == 1 or schema.get("minItems") == 1:
        phrase = "a non-empty " + phrase.removeprefix("a ")
    if schema.get("maxLength") is not None:
        phrase += f" of at most {schema['maxLength']} characters"
    if schema.get("pattern"):
        phrase += " in the expected format"
    return phrase


def _where(path: list) -> str:
    """``'validate.min'``, or ``'branches' item 2 'next'`` inside a list."""
    words: list[str] = []
    for part in path:
        if isinstance(part, str) and len(part) > 40:  # a pasted key: say which, briefly
            part = part[:40] + "…"
        if isinstance(part, int):
            words.append(f"item {part + 1}")
        elif words and words[-1].endswith("'"):
            words[-1] = f"{words[-1][:-1]}.{part}'"
        else:
            words.append(f"'{part}'")
    return " ".join(words)


def _spec_at(fields: tuple[FieldSpec, ...], path: list) -> FieldSpec | None:
    """The field (or part of an object field) that ``path`` names exactly, if any."""
    spec = None
    for part in path:
        spec = next((s for s in fields if s.name == part), None)
        if spec is None:
            return None
        fields = spec.parts
    return spec


def _error_problem(error: ValidationError, fields: tuple[FieldSpec, ...]) -> tuple[str, str]:
    """(field, message) for one jsonschema error of a step."""
    path = list(error.absolute_path)
    instance = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        missing = next((name for name in error.validator_value if name not in instance), "?")
        path.append(missing)
        return str(path[0]), f"{_where(path)} is missing: fill it in"
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = list(error.schema.get("properties", {}))
        unknown = [str(key)[:64] for key in instance if key not in known][:5]
        message = f"unknown field {', '.join(repr(key) for key in unknown)}"
        if path:
            message = f"{_where(path)}: {message}"
        if not path:
            known = [key for key in known if key != "type"]
        if known:
            message += f" (known: {', '.join(known)})"
        return str(path[0] if path else unknown[0] if unknown else ""), message
    if not path:
        return "", "a step must be an object with a 'type'"
    spec = _spec_at(fields, path)
    if spec is not None:
        phrase = spec.problem or schema_phrase(spec.json_schema())
    elif error.validator in {"oneOf", "anyOf", "not"} and error.schema.get("description"):
        return str(path[0]), f"{_where(path)} is not valid: {error.schema['description']}"
    else:
        phrase = schema_phrase(error.schema)
    return str(path[0]), f"{_where(path)} must be {phrase}"


def _closest(error: ValidationError) -> ValidationError:
    """For "matches none of these": the deepest error of the alternatives that fit.

    A button row is a button or a list of buttons; when it is a list, the useful
    error is the one inside the list, not "is not an object".
    """
    while error.context:
        depth = len(error.absolute_path)
        fitting = [
            sub
            for sub in error.context
            if not (sub.validator == "type" and len(sub.absolute_path) == depth)
        ]
        if not fitting:
            break
        error = max(fitting, key=lambda sub: len(sub.absolute_path))
    return error


def step_shape_problems(step_type: str, step: dict) -> list[tuple[str, str]]:
    """(field, message) for every way ``step`` does not match its type's schema.

    ``field`` is the top-level field concerned, so the validator can prefer a step
    type's own, more specific message about the same field.
    """
    found: list[tuple[str, str]] = []
    for error in _step_validator(step_type).iter_errors(step):
        problem = _error_problem(_closest(error), STEP_TYPES[step_type].fields)
        if problem not in found:
            found.append(problem)
        if len(found) >= MAX_PROBLEMS_PER_STEP:
            break
    return found


@cache
def _trigger_validator(kind: str) -> Draft202012Validator:
    return Draft202012Validator(trigger_kind_schemas()[kind])


def trigger_shape_problems(kind: str, trigger: dict) -> list[str]:
    """Every way ``trigger`` (of a known ``kind``) does not match its kind's schema."""
    found: list[str] = []
    for error in _trigger_validator(kind).iter_errors(trigger):
        if not error.absolute_path and error.validator == "oneOf":
            message = "give 'data' (exact) or 'prefix', not both"
        else:
            message = _error_problem(_closest(error), ())[1]
        if message not in found:
            found.append(message)
        if len(found) >= MAX_PROBLEMS_PER_STEP:
            break
    return found
