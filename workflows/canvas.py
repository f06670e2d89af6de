"""The visual editor's services: read and save a draft with its layout, check it live.

The canvas (``workflows/admin/canvas.py``, ``static/workflows/canvas/``) posts the
whole draft (definition, triggers, layout) as JSON. Everything here is plain
functions the admin views call:

- :func:`canvas_payload_parse` reads a posted body, refusing hostile input (huge,
  deeply nested, NUL bytes, lone surrogates, odd shapes) with a clear message before
  anything is written;
- :func:`canvas_save` writes definition, triggers and layout in one conditional
  UPDATE under the row lock: a stale ``revision`` raises :class:`CanvasConflict`
  naming who saved last and when, and nothing is written;
- :func:`canvas_check` validates a draft and returns the problems per step id, so
  the canvas marks them on the nodes as they appear;
- :func:`canvas_registry` is the step registry as the canvas needs it (fields, help,
  ports) — one source for the schema, the validator, the form editor and the canvas.

Layout is where a node is drawn, never what it does: it is stored beside the draft,
not inside the definition, and is not part of a version's checksum.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from workflows.engine.definition import STEP_ID_RE
from workflows.engine.steps import STEP_TYPES
from workflows.engine.templating import FILTERS, USER_FIELDS
from workflows.engine.validation import WorkflowValidationError, triggers_problems
from workflows.models import Workflow
from workflows.publishing import workflow_validate_for

MAX_BODY = 512 * 1024  # bytes of one posted draft
MAX_DEPTH = 24  # nesting of lists and objects
MAX_STEPS = 300
MAX_STRING = 20_000  # characters of one text (a template's own limit)
MAX_COORD = 1_000_000
VARS_RE = re.compile(r"\bvars\.([A-Za-z][A-Za-z0-9_]*)")


class CanvasPayloadError(ValueError):
    """A posted draft that cannot be stored; the message is for the operator."""


@dataclass(frozen=True, slots=True)
class CanvasConflict(Exception):
    """Someone saved the draft after this editor loaded it; nothing was written."""

    by: str
    at: str  # HH:MM, local time
    revision: str

    def message(self) -> str:
        return (
            f"This draft was changed by {self.by} at {self.at}. Your changes are not saved "
            "yet: reload their version (yours stays in undo) or overwrite it with yours."
        )


@dataclass(frozen=True, slots=True)
class CanvasPayload:
    definition: dict
    triggers: list
    layout: dict
    revision: str


# --- Reading a posted draft -----------------------------------------------------------


def _clean(value: Any, depth: int, where: str) -> None:
    """Refuse what PostgreSQL or the editor cannot hold: NUL, lone surrogates, depth."""
    if depth > MAX_DEPTH:
        raise CanvasPayloadError(f"{where} nests lists or objects more than {MAX_DEPTH} deep")
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise CanvasPayloadError(f"{where} has a text over {MAX_STRING} characters")
        if "\x00" in value:
            raise CanvasPayloadError(f"{where} contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise CanvasPayloadError(
                f"{where} contains broken Unicode (a lone surrogate)"
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _clean(key, depth + 1, where)
            _clean(item, depth + 1, where)
    elif isinstance(value, list):
        for item in value:
            _clean(item, depth + 1, where)
    elif isinstance(value, float) and not math.isfinite(value):
        raise CanvasPayloadError(f"{where} contains a number that is not finite")


def _layout_parse(raw: Any, steps: dict) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise CanvasPayloadError("'layout' must map step names to positions")
    layout = {}
    for key, point in raw.items():
        if key not in steps and key != "@start":
            continue  # a position of a deleted step: dropped, it is layout only
        if not isinstance(point, dict):
            raise CanvasPayloadError(f"the position of '{key}' must be {{x, y}}")
        coords = []
        for axis in ("x", "y"):
            value = point.get(axis)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise CanvasPayloadError(f"the position of '{key}' needs a number '{axis}'")
            if not math.isfinite(value) or abs(value) > MAX_COORD:
                raise CanvasPayloadError(f"the position of '{key}' is out of range")
            coords.append(round(float(value), 1))
        layout[key] = {"x": coords[0], "y": coords[1]}
    return layout


def canvas_payload_parse(body: bytes) -> CanvasPayload:
    """A posted draft, checked for shape and hostile content. Raises CanvasPayloadError."""
    if len(body) > MAX_BODY:
        raise CanvasPayloadError(f"the draft is larger than {MAX_BODY // 1024} KB")
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise CanvasPayloadError("the draft is not UTF-8 text") from None
    except RecursionError:
        raise CanvasPayloadError(f"the draft nests more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # JSONDecodeError, or an integer of thousands of digits
        reason = getattr(exc, "msg", None) or "a number is too long"
        raise CanvasPayloadError(f"the draft is not valid JSON ({reason})") from None
    if not isinstance(data, dict):
        raise CanvasPayloadError("the draft must be an object")
    _clean(data, 0, "the draft")
    definition = data.get("definition")
    if not isinstance(definition, dict) or not isinstance(definition.get("steps"), dict):
        raise CanvasPayloadError("'definition' must be an object with 'steps'")
    steps = definition["steps"]
    if len(steps) > MAX_STEPS:
        raise CanvasPayloadError(f"a workflow has at most {MAX_STEPS} steps")
    for step_id, step in steps.items():
        if not STEP_ID_RE.match(step_id):
            raise CanvasPayloadError(
                f"the step name '{step_id[:64]}' may only use letters, digits, _ and - (1-64)"
            )
        if not isinstance(step, dict) or not isinstance(step.get("type"), str):
            raise CanvasPayloadError(f"step '{step_id}' must be an object with a 'type'")
    start = definition.get("start")
    if start is not None and not isinstance(start, str):
        raise CanvasPayloadError("'start' must be a step name")
    triggers = data.get("triggers", [])
    if not isinstance(triggers, list):
        raise CanvasPayloadError("'triggers' must be a list")
    revision = data.get("revision", "")
    if not isinstance(revision, str):
        raise CanvasPayloadError("'revision' must be a text")
    return CanvasPayload(
        definition=definition,
        triggers=triggers,
        layout=_layout_parse(data.get("layout"), steps),
        revision=revision,
    )


# --- Reading and saving ---------------------------------------------------------------


def _operator_name(user) -> str:
    if user is None:
        return "someone"
    return user.get_full_name() or user.get_username()


def canvas_revision(workflow: Workflow) -> str:
    """The draft's revision: the save stamp the editor hands back on its next save."""
    return workflow.updated_at.isoformat()


def canvas_state(workflow: Workflow) -> dict[str, Any]:
    """What the canvas loads: the draft, its layout and revision, who saved it last."""
    return {
        "definition": workflow.draft,
        "triggers": workflow.triggers,
        "layout": workflow.layout or {},
        "revision": canvas_revision(workflow),
        "saved_by": _operator_name(workflow.draft_saved_by) if workflow.draft_saved_by else "",
        "saved_at": timezone.localtime(workflow.updated_at).strftime("%H:%M"),
    }


def canvas_save(*, workflow_id: int, payload: CanvasPayload, saved_by) -> dict[str, Any]:
    """Save definition, triggers and layout together, only over the revision the editor
    loaded. Raises :class:`CanvasConflict` (nothing written) or
    :class:`WorkflowValidationError` (invalid triggers; nothing written)."""
    problems = triggers_problems(payload.triggers)
    if problems:
        raise WorkflowValidationError(problems)
    with transaction.atomic():
        row = (
            Workflow.objects.select_for_update(of=("self",))
            .select_related("draft_saved_by")
            .get(pk=workflow_id)
        )
        if canvas_revision(row) != payload.revision:
            raise CanvasConflict(
                by=_operator_name(row.draft_saved_by) if row.draft_saved_by else "someone",
                at=timezone.localtime(row.updated_at).strftime("%H:%M"),
                revision=canvas_revision(row),
            )
        row.draft, row.triggers, row.layout = payload.definition, payload.triggers, payload.layout
        row.draft_saved_by = saved_by if getattr(saved_by, "pk", None) else None
        row.save(update_fields=["draft", "triggers", "layout", "draft_saved_by", "updated_at"])
    return canvas_state(row)


def canvas_check(*, workflow: Workflow, definition: dict, triggers: list) -> dict[str, Any]:
    """Publishing's checks on a draft, grouped by step id ("" for the whole workflow)."""
    problems: dict[str, list[str]] = {}
    original = workflow.triggers
    workflow.triggers = triggers
    try:
        workflow_validate_for(workflow=workflow, definition=definition)
    except WorkflowValidationError as exc:
        for error in exc.errors:
            problems.setdefault(error.step, []).append(error.message)
    finally:
        workflow.triggers = original
    return {"valid": not problems, "problems": problems}


# --- What the editor offers ------------------------------------------------------------


def _field_json(spec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "kind": spec.kind,
        "label": spec.label,
        "help": spec.help,
        "required": spec.required,
        "choices": [list(choice) for choice in spec.choices],
        "parts": [_field_json(part) for part in spec.parts],
    }


def canvas_registry() -> dict[str, Any]:
    """Every step type: label, description, fields and the fields that link steps."""
    return {
        name: {
            "type": name,
            "label": handler.label,
            "description": handler.description,
            "fields": [_field_json(spec) for spec in handler.fields],
            "links": list(handler.target_fields),
        }
        for name, handler in STEP_TYPES.items()
    }


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def project_variables(*, project_id: int) -> list[str]:
    """Every ``vars.*`` the project's workflows write or read, for the pickers."""
    found: set[str] = set()
    for draft in Workflow.objects.filter(project_id=project_id).values_list("draft", flat=True):
        steps = draft.get("steps") if isinstance(draft, dict) else None
        for step in (steps or {}).values():
            if isinstance(step, dict) and isinstance(step.get("variable"), str):
                name = step["variable"].removeprefix("vars.")
                if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
                    found.add(name)
        for text in _strings(draft):
            found.update(VARS_RE.findall(text))
    return sorted(found)[:500]


def canvas_vocabulary(*, project_id: int) -> dict[str, Any]:
    """Variables and filters the condition builder and the message composer offer."""
    return {
        "user_fields": sorted(USER_FIELDS - {"history"}),
        "vars": project_variables(project_id=project_id),
        "filters": sorted(FILTERS),
    }


# --- The message composer's preview ------------------------------------------------------

SAMPLE_USER = {
    "id": 1,
    "telegram_id": 123456789,
    "chat_id": 123456789,
    "username": "anna_sample",
    "first_name": "Anna",
    "last_name": "Sample",
    "full_name": "Anna Sample",
    "language_code": "en",
    "referral_code": "ANNA42",
    "referral_link": "https://t.me/your_bot?start=ref_ANNA42",
    "balance": 120,
    "level": "Silver",
    "referrals": 3,
    "history": "(recent bonus history)",
}


def message_preview(
    *, project_id: int, text: Any, buttons: Any, variables: Any = None
) -> dict[str, Any]:
    """A message as a sample user would see it: rendered with the real template engine.

    Each variable of the project (and each name the editor sends in ``variables``:
    the draft being edited) gets the sample value 7, so every placeholder shows
    something. Returns the Telegram-safe HTML, the button labels, or the problem.
    """
    from botplatform.languages import pick_text
    from botplatform.models import Project
    from workflows.engine.templating import TemplateError, template_render
    from workflows.simulator import telegram_html

    if isinstance(text, dict) or isinstance(buttons, list):  # per-language: the default's
        project = Project.objects.only("languages", "default_language").get(pk=project_id)
        spoken = project.language_list
        text = pick_text(text, spoken[0], spoken[0], spoken)
    if not isinstance(text, str) or len(text) > MAX_STRING or "\x00" in text:
        return {"html": "", "buttons": [], "problem": "the text cannot be previewed"}
    names = set(project_variables(project_id=project_id))
    if isinstance(variables, list):
        names.update(
            name
            for name in variables[:500]
            if isinstance(name, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", name)
        )
    context = {
        "user": dict(SAMPLE_USER),
        "vars": dict.fromkeys(names, 7),
        "bot": {"username": "your_bot", "link": "https://t.me/your_bot"},
    }
    try:
        rendered = template_render(text, context)
    except TemplateError as exc:
        return {"html": "", "buttons": [], "problem": str(exc)}
    labels: list[list[str]] = []
    for row in buttons if isinstance(buttons, list) else []:
        row = row if isinstance(row, list) else [row]
        shown = []
        for button in row[:8]:
            label = button.get("text") if isinstance(button, dict) else None
            label = pick_text(label, spoken[0], spoken[0], spoken)
            if isinstance(label, str) and "\x00" not in label and len(label) < 200:
                try:
                    shown.append(template_render(label, context, escape=False))
                except TemplateError:
                    shown.append(label)
        if shown:
            labels.append(shown)
    return {"html": str(telegram_html(rendered)), "buttons": labels[:20], "problem": ""}
