"""What a step type is, and what it may return to the runner.

A step type is a class in the registry (one module per type). The runner gives it a
:class:`StepRuntime` (the execution, the user's data, the event, an action list) and
gets an outcome back: go to another step, wait for the user, wait for a timer or a
background task, or jump into another workflow. Step types never touch the execution
row themselves; the runner owns its state transitions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from botplatform.conversation import Button, EditMessage, InputEvent, SendMessage
from botplatform.languages import (
    LANGUAGE_CODE_PATTERN,
    MAX_LANGUAGES,
    language_list,
    normalize_code,
    pick_text,
    user_language,
)
from workflows.engine.templating import TemplateError, template_check, template_render

if TYPE_CHECKING:
    from workflows.engine.userdata import UserData
    from workflows.models import WorkflowExecution

TELEGRAM_TEXT_LIMIT = 4096
CALLBACK_DATA_LIMIT = 64
KEYBOARD_BUTTON_LIMIT = 64  # a reply-keyboard label longer than this is a mistake
# Set on the execution's context once a shared phone was taken: the next plain message
# (no keyboard of its own) removes the "share my phone" keyboard.
KEYBOARD_REMOVE = "keyboard_remove"


class StepFailure(Exception):
    """A step cannot go on; the message is shown to the operator."""


# --- Outcomes ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Goto:
    step: str | None  # None ends the execution


@dataclass(frozen=True, slots=True)
class Wait:
    """Wait for the user (a button press or a typed answer)."""

    kind: str  # "buttons" | "input"
    until: datetime | None
    state: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Pending:
    """Wait for a timer or a background task, not for the user."""

    kind: str  # "delay" | "http"
    until: datetime
    state: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Jump:
    workflow: str  # slug of another workflow of the project


@dataclass(frozen=True, slots=True)
class Call:
    """Run another workflow as a sub-flow; this step's ``timer`` runs when it returns."""

    workflow: str  # slug of another workflow of the project


@dataclass(frozen=True, slots=True)
class NotConsumed:
    """The waiting step does not take this input (e.g. text while buttons are shown)."""


Outcome = Goto | Wait | Pending | Jump | Call | NotConsumed


# --- Runtime -----------------------------------------------------------------


def data_language(data: UserData, project_id: int) -> str:
    """The user's language for this event, kept on ``data`` (one lookup per event, and
    none when the bot's project is loaded already): see botplatform/languages.py."""
    if data.language:
        return data.language[0]
    from botplatform.models import Bot, Project

    bot = data.bot
    if bot is not None and Bot.project.is_cached(bot):
        languages, default = bot.project.languages, bot.project.default_language
    else:
        languages, default = Project.objects.values_list("languages", "default_language").get(
            pk=project_id
        )
    spoken = language_list(languages, default)
    user = data.user
    chosen = user_language(
        getattr(user, "language", ""), getattr(user, "language_code", ""), spoken, default
    )
    data.language = (chosen, normalize_code(default) or chosen, spoken)
    return chosen


@dataclass
class StepRuntime:
    execution: WorkflowExecution
    step_id: str
    step: dict
    data: UserData
    chat_id: int
    event: InputEvent | None
    actions: list
    now: datetime
    output: dict = field(default_factory=dict)
    on_commit: list[Callable[[], None]] = field(default_factory=list)
    edited: bool = False

    def context(self) -> dict[str, Any]:
        """The user's tree, plus ``trigger`` (what started this execution) when known."""
        context = self.data.context()
        trigger = self.execution.context.get("trigger")
        if isinstance(trigger, dict):
            context = {**context, "trigger": trigger}
        return context

    def language(self) -> str:
        """The language to talk to this user in (their choice, Telegram's, or the
        project's default); looked up once per event and kept on ``data``."""
        return data_language(self.data, self.execution.project_id)

    def languages(self) -> list[str]:
        """The project's language codes, the default first."""
        self.language()
        return list(self.data.language[2])

    def text(self, value: Any) -> Any:
        """A per-language text's version for this user (a plain string as is): THE place
        texts are resolved, so every step and every text field behaves the same."""
        if not isinstance(value, dict):
            return value
        language = self.language()
        return pick_text(value, language, self.data.language[1], self.data.language[2])

    def render(self, source: str | dict, *, escape: bool = True) -> str:
        source = self.text(source)
        try:
            return template_render(source, self.context(), escape=escape)
        except TemplateError as exc:
            raise StepFailure(f"template error: {exc}") from exc

    def send(
        self,
        text: str,
        *,
        buttons: tuple[tuple[Button, ...], ...] = (),
        reply_keyboard: tuple[tuple[str, ...], ...] = (),
        remove_reply_keyboard: bool = False,
        edit: bool = False,
        contact_button: str = "",
    ) -> None:
        if len(text) > TELEGRAM_TEXT_LIMIT:
            text = text[: TELEGRAM_TEXT_LIMIT - 1] + "…"
        event = self.event
        if (
            edit
            and not self.edited
            and event is not None
            and event.kind == "callback"
            and event.message_id
            and not reply_keyboard
            and not contact_button
        ):
            self.edited = True
            self.actions.append(
                EditMessage(
                    chat_id=self.chat_id, message_id=event.message_id, text=text, buttons=buttons
                )
            )
            return
        if not (buttons or reply_keyboard or contact_button) and self.execution.context.pop(
            KEYBOARD_REMOVE, False
        ):
            remove_reply_keyboard = True  # the "share my phone" keyboard has done its job
        self.actions.append(
            SendMessage(
                chat_id=self.chat_id,
                text=text,
                buttons=buttons,
                reply_keyboard=reply_keyboard,
                remove_reply_keyboard=remove_reply_keyboard,
                contact_button=contact_button,
            )
        )

    def next_seq(self) -> int:
        """A new number for this execution's next wait; old buttons carry old numbers."""
        context = self.execution.context
        context["seq"] = int(context.get("seq", 0)) + 1
        return context["seq"]


# --- Validation helpers --------------------------------------------------------


def text_versions(value: Any, where: str, add: Callable[[str], None]) -> list[tuple[str, str]]:
    """(where, text) for each version of a text that may have one per language;
    reports a wrong shape through ``add`` (e.g. a bad language code) and skips it."""
    if isinstance(value, str):
        return [(where, value)]
    if not isinstance(value, dict):
        add(f"{where} must be a text, or an object with a text per language")
        return []
    if not value:
        add(f'{where} has no language: give at least one, e.g. {{"en": "..."}}')
        return []
    if len(value) > MAX_LANGUAGES:
        add(f"{where} has {len(value)} languages; at most {MAX_LANGUAGES}")
        return []
    found = []
    for code, text in value.items():
        shown = repr(code[:20]) if isinstance(code, str) else "?"
        if not isinstance(code, str) or normalize_code(code) != code:
            add(
                f"{where}: {shown} is not a language code; use lower-case codes such as "
                '"en" or "ru"'
            )
        elif not isinstance(text, str):
            add(f"{where} in {shown} must be a text")
        else:
            found.append((f"{where} ({code})", text))
    return found


def localized_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A text's schema that also takes one version per language: ``{"en": ..., "ru": ...}``."""
    return {
        "anyOf": [
            schema,
            {
                "type": "object",
                "propertyNames": {"pattern": LANGUAGE_CODE_PATTERN},
                "additionalProperties": schema,
                "minProperties": 1,
                "maxProperties": MAX_LANGUAGES,
                "description": 'one version per language code, e.g. {"en": "Hi", "ru": "Привет"}',
            },
        ]
    }


class Checker:
    """Collects problems of one step for :mod:`workflows.engine.validation`."""

    def __init__(self, step_id: str, step: dict) -> None:
        self.step_id = step_id
        self.step = step
        self.problems: list[str] = []

    def add(self, message: str) -> None:
        self.problems.append(message)

    def template(self, key: str, *, required: bool = False, limit: int | None = None) -> None:
        value = self.step.get(key)
        if value is None:
            if required:
                self.add(f"'{key}' is missing: fill it in")
            return
        for where, text in text_versions(value, f"'{key}'", self.add):
            problem = template_check(text)
            if problem:
                self.add(f"{where}: {problem}")
            elif limit and len(text) > limit:
                self.add(f"{where} is {len(text)} characters long; Telegram allows at most {limit}")

    def number(
        self, key: str, *, required: bool = False, minimum: float | None = None
    ) -> float | None:
        value = self.step.get(key)
        if value is None:
            if required:
                self.add(f"'{key}' is missing: fill it in")
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.add(f"'{key}' must be a number")
            return None
        if minimum is not None and value < minimum:
            self.add(f"'{key}' must be at least {minimum:g}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], *, default: str | None = None) -> None:
        value = self.step.get(key, default)
        if value not in choices:
            self.add(f"'{key}' must be one of: {', '.join(choices)}")


# --- The contract: fields, schema, editor ------------------------------------------

# JSON Schema of a field naming another step (``#/$defs/stepRef`` of the file schema).
STEP_REF: dict[str, Any] = {"$ref": "#/$defs/stepRef"}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a step type: its JSON Schema, and how the form editor shows it.

    ``kind`` is the editor's widget: template line int number bool step choice workflow
    keyboard pairs json amount value buttons branches. A ``choice`` field's schema is
    the enum of its ``choices``; an object field lists its ``parts`` (the editor shows
    them as ``validate.min`` and so on). ``problem`` is what the validator says when
    the value has the wrong shape, where the schema alone says it badly (a pattern,
    say); otherwise the message is derived from the schema.
    """

    name: str
    kind: str
    label: str
    help: str = ""
    schema: dict[str, Any] = field(default_factory=dict)
    required: bool = False
    choices: tuple[tuple[str, str], ...] = ()
    parts: tuple[FieldSpec, ...] = ()
    problem: str = ""
    # A user-facing text: may be an object with a version per language.
    localized: bool = False

    def json_schema(self) -> dict[str, Any]:
        """The field's JSON Schema, with the label and help as title and description."""
        schema = dict(self.schema)
        if self.choices:
            schema["enum"] = [value for value, _ in self.choices]
        if self.parts:
            schema.update(
                type="object",
                properties={part.name: part.json_schema() for part in self.parts},
                additionalProperties=False,
            )
        if self.localized:
            schema = localized_schema(schema)
        schema["title"] = self.label
        if self.help:
            schema["description"] = self.help
        return schema


def step_ref(name: str, label: str, help: str = "") -> FieldSpec:
    """A field naming another step: a select of the workflow's steps in the editor."""
    return FieldSpec(name, "step", label, help, schema=STEP_REF)


MAX_WAIT = 366 * 86400  # a wait for the user longer than a year is a typo (and overflows)
TIMEOUT_FIELD = FieldSpec(
    "timeout",
    "int",
    "Wait at most (seconds)",
    "How long to wait for the user. Empty: 24 hours.",
    schema={"type": "number", "minimum": 1, "maximum": MAX_WAIT},
)
ON_TIMEOUT_FIELD = step_ref("on_timeout", "If the user does not answer", "Empty: just stop.")
KEYBOARD_FIELD = FieldSpec(
    "reply_keyboard",
    "keyboard",
    "Reply keyboard",
    "One row per line, buttons separated by |, e.g. “Menu | Help”. A tap arrives as text.",
    schema={"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
    problem="a list of rows of texts",
)
CONTACT_BUTTON_FIELD = FieldSpec(
    "request_contact",
    "line",
    "“Share my phone” button",
    "The label of a reply-keyboard button that sends the user's own phone number, "
    "e.g. “📱 Share my phone”. Empty: no such button.",
    schema={"type": "string", "maxLength": KEYBOARD_BUTTON_LIMIT},
    localized=True,
)
DESCRIPTION_FIELD = FieldSpec(
    "description",
    "line",
    "Note",
    "For you and your team; users never see it.",
    schema={"type": "string"},
)


# --- Step type base -----------------------------------------------------------


class StepType:
    type: ClassVar[str]
    # The contract, read by the schema (workflows/engine/schema.py), the validator and
    # the form editor: a name for operators, one line on what the step does, its fields.
    label: ClassVar[str]
    description: ClassVar[str]
    fields: ClassVar[tuple[FieldSpec, ...]] = ()
    # Waits for the user or a timer: a cycle through such a step is not an endless loop.
    waits: ClassVar[bool] = False
    # Writes to the database: the runner wraps it in a savepoint, so a failure
    # leaves nothing half-applied.
    atomic: ClassVar[bool] = False
    # Fields that name other steps.
    target_fields: ClassVar[tuple[str, ...]] = ("next",)

    def savepoint(self, step: dict) -> bool:
        """Whether this step runs in a savepoint (``atomic``). A step whose every write
        is one statement can do without: a failing statement then fails the whole
        event, which rolls back and is retried, instead of the step alone."""
        return self.atomic

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of one step of this type (``$ref`` into the file's ``$defs``)."""
        return {
            "type": "object",
            "title": cls.label,
            "description": cls.description,
            "properties": {
                "type": {"const": cls.type},
                **{spec.name: spec.json_schema() for spec in cls.fields},
            },
            "required": ["type", *(spec.name for spec in cls.fields if spec.required)],
            "additionalProperties": False,
        }

    @classmethod
    def editor_fields(cls) -> tuple[FieldSpec, ...]:
        """The form editor's inputs: an object field's parts appear as ``name.part``."""
        found: list[FieldSpec] = []
        for spec in cls.fields:
            if spec.parts:
                found.extend(replace(part, name=f"{spec.name}.{part.name}") for part in spec.parts)
            else:
                found.append(spec)
        return tuple(found)

    def waits_for(self, step: dict) -> bool:
        """Whether this step stops the run (so a cycle through it is not endless)."""
        return self.waits

    def targets(self, step: dict) -> list[tuple[str, Any]]:
        """(where, step id) pairs for every reference to another step."""
        return [(name, step[name]) for name in self.target_fields if step.get(name) is not None]

    def check(self, checker: Checker) -> None:
        """Add problems of the step's own fields."""

    def warnings(self, step: dict) -> list[str]:
        """Likely mistakes that do not stop publishing (shown to the operator)."""
        return []

    def run(self, rt: StepRuntime) -> Outcome:
        raise NotImplementedError

    def resume(self, rt: StepRuntime, event: InputEvent) -> Outcome:
        return NotConsumed()

    def timer(self, rt: StepRuntime, data: dict | None) -> Outcome:
        raise StepFailure("this step does not wait for a timer")


def wait_timeout(step: dict) -> int:
    """Seconds a wait for the user lasts: the step's ``timeout`` or the default."""
    from django.conf import settings

    value = step.get("timeout")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return int(value)
    return int(getattr(settings, "WORKFLOW_WAIT_TIMEOUT", 86400))
