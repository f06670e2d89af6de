"""``input``: ask a question, validate the typed answer, store it in a variable.

An invalid answer gets the retry text and another try; after ``max_attempts``
invalid answers the execution goes to ``on_fail`` (or ends).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.utils import translation
from django.utils.translation import gettext, gettext_noop

from botplatform.conversation import InputEvent
from users.customers import CustomerError, phone_normalize
from users.e164 import PhoneInvalid, phone_e164, phone_masked
from workflows.engine.numbers import NOT_A_NUMBER, NumberError, number_parse
from workflows.engine.patterns import pattern_fullmatch, pattern_problem
from workflows.engine.steps.base import (
    CONTACT_BUTTON_FIELD,
    DESCRIPTION_FIELD,
    KEYBOARD_FIELD,
    KEYBOARD_REMOVE,
    ON_TIMEOUT_FIELD,
    TELEGRAM_TEXT_LIMIT,
    TIMEOUT_FIELD,
    Checker,
    FieldSpec,
    Goto,
    NotConsumed,
    Outcome,
    StepRuntime,
    StepType,
    Wait,
    step_ref,
    wait_timeout,
)
from workflows.engine.steps.message import contact_button_label
from workflows.engine.steps.set_variable import (
    VARIABLE_PROBLEM,
    VARIABLE_SCHEMA,
    variable_name_problem,
)

KINDS = ("text", "number", "integer", "phone", "email", "date", "regex", "contact")
DEFAULT_CONTACT_BUTTON = "📱 Share my phone number"
# Answers that are not typed: the stored value is Telegram's file_id (photo,
# document) or "latitude,longitude" (location).
ATTACHMENT_KINDS = ("photo", "document", "location")
ALL_KINDS = KINDS + ATTACHMENT_KINDS
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
PHONE_RE = re.compile(r"^\+?\d{7,15}$")
DATE_FORMATS = ("%d.%m.%Y", "%Y-%m-%d", "%d/%m/%Y")
MAX_ANSWER = 1000
MAX_PATTERN_ANSWER = 256  # answers checked by an operator's pattern (see patterns.py)
DEFAULT_ATTEMPTS = 3


class Invalid(ValueError):
    """Why an answer is refused. Translated when shown (``str``), in the language active
    then: the step activates the user's language only on this rare path."""

    def __init__(self, message: str, **params: Any) -> None:
        super().__init__(message)
        self.params = params

    def __str__(self) -> str:
        text = gettext(self.args[0])
        return text % self.params if self.params else text


class OwnMessage(Invalid):
    """The operator's own explanation (a regex rule's ``message``): shown as written."""

    def __str__(self) -> str:
        message = self.args[0]
        return str(next(iter(message.values()), "") if isinstance(message, dict) else message)


def _date(text: str) -> date:
    if text == "today":
        return date.today()  # noqa: DTZ011 - a calendar date, not a moment
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).date()  # noqa: DTZ007
        except ValueError:
            continue
    raise Invalid(gettext_noop("please send a date like 31.12.1990"))


def _longer(limit: int) -> Invalid:
    return Invalid(gettext_noop("the answer is longer than %(n)s characters"), n=limit)


def answer_validate(rule: dict, text: str) -> Any:
    """The stored value for ``text`` under ``rule``, or :class:`Invalid` saying why."""
    text = text.strip()
    if not text:
        raise Invalid(gettext_noop("the answer is empty"))
    if len(text) > MAX_ANSWER:
        raise _longer(MAX_ANSWER)
    kind = rule.get("type", "text")
    low, high = rule.get("min"), rule.get("max")
    if kind == "text":
        if low is not None and len(text) < low:
            raise Invalid(gettext_noop("at least %(n)s characters, please"), n=low)
        if high is not None and len(text) > high:
            raise Invalid(gettext_noop("at most %(n)s characters, please"), n=high)
        return text
    if kind in {"number", "integer"}:
        try:
            number = number_parse(text.replace(",", ".").replace(" ", ""))
        except NumberError as exc:
            reason = exc.args[0]
            if reason == NOT_A_NUMBER:
                raise Invalid(gettext_noop("please send a number")) from None
            raise Invalid(gettext_noop("the number %(reason)s"), reason=reason) from None
        if kind == "integer" and number != number.to_integral_value():
            raise Invalid(gettext_noop("please send a whole number"))
        if low is not None and number < Decimal(str(low)):
            raise Invalid(gettext_noop("the number must be at least %(n)s"), n=low)
        if high is not None and number > Decimal(str(high)):
            raise Invalid(gettext_noop("the number must be at most %(n)s"), n=high)
        return int(number) if kind == "integer" else float(number)
    if kind == "phone":
        phone = re.sub(r"[\s()\-]", "", text)
        if not PHONE_RE.match(phone):
            raise Invalid(gettext_noop("please send a phone number like +44 20 7946 0958"))
        return phone
    if kind == "email":
        if not EMAIL_RE.match(text):
            raise Invalid(gettext_noop("please send an e-mail address like name@example.com"))
        return text.lower()
    if kind == "date":
        value = _date(text)
        if low is not None and value < _date(str(low)):
            raise Invalid(
                gettext_noop("the date must not be before %(date)s"),
                date=f"{_date(str(low)):%d.%m.%Y}",
            )
        if high is not None and value > _date(str(high)):
            raise Invalid(
                gettext_noop("the date must not be after %(date)s"),
                date=f"{_date(str(high)):%d.%m.%Y}",
            )
        return value.isoformat()
    if kind == "regex":
        if len(text) > MAX_PATTERN_ANSWER:
            raise _longer(MAX_PATTERN_ANSWER)
        if not pattern_fullmatch(rule.get("pattern") or "", text):
            if rule.get("message"):
                raise OwnMessage(rule["message"])  # may have a version per language
            raise Invalid(gettext_noop("the answer is not in the expected format"))
        return text
    if kind == "contact":
        raise Invalid(gettext_noop("please press the button below to share your phone number"))
    raise Invalid(f"unknown validation type {kind}")


def contact_validate(event: InputEvent, *, telegram_id: int) -> str:
    """The phone (E.164) of a contact the user shared, if it is their own.

    The "share my phone" button sends the sender's own contact: its ``user_id`` is the
    sender's. A contact picked from the address book (someone else's, or a made-up one)
    or forwarded from another chat is refused: anyone can send those.
    """
    if event.forwarded:
        raise Invalid(
            "that contact was forwarded; please press the button below to share your own number"
        )
    if event.contact_user_id is None or event.contact_user_id != telegram_id:
        raise Invalid(
            "that is not your own contact; please press the button below to share your number"
        )
    try:
        # The bounded parse first, then the numbering plans (the same check the till's
        # API applies), so what is stored here is what a till can look up.
        return phone_normalize(phone_e164(event.contact_phone, international=True))
    except (PhoneInvalid, CustomerError) as exc:
        raise Invalid(str(exc)) from None


def attachment_prompt(kind: str) -> str:
    """The system's retry text for a missing photo, document or location (translated)."""
    prompts = {
        "photo": gettext("Please send a photo."),
        "document": gettext("Please send a document."),
        "location": gettext("Please send a location."),
    }
    return prompts.get(kind) or gettext("Please send a %(kind)s.") % {"kind": kind}


class InputStep(StepType):
    type = "input"
    label = "Ask a question"
    description = "Ask, validate the answer, store it in a variable."
    fields = (
        FieldSpec(
            "text",
            "template",
            "Question",
            schema={"type": "string", "maxLength": TELEGRAM_TEXT_LIMIT},
            required=True,
            localized=True,
        ),
        FieldSpec(
            "variable",
            "line",
            "Save the answer as",
            "A variable name: a letter, then letters, digits or _. Read it later as {{ vars.NAME }}.",
            schema=VARIABLE_SCHEMA,
            required=True,
            problem=VARIABLE_PROBLEM,
        ),
        FieldSpec(
            "validate",
            "object",
            "Expected answer",
            problem='an object like {"type": "date"}',
            parts=(
                FieldSpec(
                    "type",
                    "choice",
                    "Expected answer",
                    choices=tuple(
                        zip(
                            ALL_KINDS,
                            (
                                "Any text",
                                "A number",
                                "A whole number",
                                "A phone number",
                                "An e-mail address",
                                "A date",
                                "Text matching a pattern",
                                "The user's own phone (the “share my phone” button)",
                                "A photo (stores its file_id)",
                                "A document (stores its file_id)",
                                "A location (stores “latitude,longitude”)",
                            ),
                            strict=True,
                        )
                    ),
                ),
                FieldSpec(
                    "min",
                    "value",
                    "Minimum",
                    "Length for text, value for numbers, a date (YYYY-MM-DD or “today”) for dates.",
                    schema={"type": ["number", "string"]},
                ),
                FieldSpec("max", "value", "Maximum", schema={"type": ["number", "string"]}),
                FieldSpec(
                    "pattern",
                    "line",
                    "Pattern",
                    "For “text matching a pattern” (regex).",
                    schema={"type": "string"},
                ),
                FieldSpec(
                    "message",
                    "line",
                    "Explanation of the pattern",
                    schema={"type": "string"},
                    localized=True,
                ),
            ),
        ),
        FieldSpec(
            "retry_text",
            "template",
            "On an invalid answer say",
            "Empty: an explanation.",
            schema={"type": "string", "maxLength": TELEGRAM_TEXT_LIMIT},
            localized=True,
        ),
        FieldSpec(
            "max_attempts",
            "int",
            "Tries",
            "Invalid answers allowed (default 3).",
            schema={"type": "integer", "minimum": 1},
        ),
        KEYBOARD_FIELD,
        FieldSpec(
            "request_contact",
            CONTACT_BUTTON_FIELD.kind,
            CONTACT_BUTTON_FIELD.label,
            CONTACT_BUTTON_FIELD.help + f" With “the user's own phone” the button is always shown "
            f"(empty: “{DEFAULT_CONTACT_BUTTON}”).",
            schema=CONTACT_BUTTON_FIELD.schema,
        ),
        step_ref("next", "Then go to"),
        step_ref("on_fail", "After too many invalid answers"),
        TIMEOUT_FIELD,
        ON_TIMEOUT_FIELD,
        DESCRIPTION_FIELD,
    )
    waits = True
    atomic = True  # the answer is stored as a variable
    target_fields = ("next", "on_fail", "on_timeout")

    def check(self, checker: Checker) -> None:
        step = checker.step
        checker.template("text", required=True, limit=TELEGRAM_TEXT_LIMIT)
        checker.template("retry_text", limit=TELEGRAM_TEXT_LIMIT)
        checker.template("request_contact")
        problem = variable_name_problem(step.get("variable"))
        if problem:
            checker.add(f"'variable': {problem}")
        rule = step.get("validate", {"type": "text"})
        if not isinstance(rule, dict):
            checker.add('\'validate\' must be an object like {"type": "date"}')
            return
        kind = rule.get("type", "text")
        if kind not in ALL_KINDS:
            checker.add(f"'validate.type' must be one of: {', '.join(ALL_KINDS)}")
        bounds: dict[str, Any] = {}
        for bound in ("min", "max"):
            value = rule.get(bound)
            if value is None:
                continue
            if kind == "date":
                try:
                    bounds[bound] = _date(str(value))
                except Invalid:
                    checker.add(f"'validate.{bound}' must be a date like 1900-01-01 or 'today'")
            elif isinstance(value, bool) or not isinstance(value, int | float):
                checker.add(f"'validate.{bound}' must be a number")
            else:
                bounds[bound] = value
        if len(bounds) == 2 and bounds["min"] > bounds["max"]:
            relation = "later than" if kind == "date" else "greater than"
            checker.add(
                f"'validate.min' ({rule['min']}) is {relation} 'validate.max' ({rule['max']}): "
                "no answer could pass; swap them"
            )
        if kind == "regex":
            problem = pattern_problem(rule.get("pattern"))
            if problem:
                checker.add(f"'validate.pattern': {problem}")

    def _ask(self, rt: StepRuntime, text: str, attempts: int) -> Wait:
        contact = contact_button_label(rt, rt.step)
        if not contact and (rt.step.get("validate") or {}).get("type") == "contact":
            contact = DEFAULT_CONTACT_BUTTON
        rt.send(
            text,
            reply_keyboard=tuple(tuple(r) for r in rt.step.get("reply_keyboard") or ()),
            contact_button=contact,
        )
        until = rt.now + timedelta(seconds=wait_timeout(rt.step))
        return Wait(kind="input", until=until, state={"attempts": attempts})

    def run(self, rt: StepRuntime) -> Outcome:
        text = rt.render(rt.step["text"])
        rt.output["text"] = text
        return self._ask(rt, text, 0)

    def resume(self, rt: StepRuntime, event: InputEvent) -> Outcome:
        step = rt.step
        rule = step.get("validate") or {"type": "text"}
        kind = rule.get("type", "text")
        if kind in ATTACHMENT_KINDS:
            return self._attachment(rt, event, kind)
        if event.kind == "text":
            answer = event.text
        elif event.kind == "command":
            answer = f"/{event.command} {event.payload}".strip()
        elif event.kind == "contact" and rule.get("type") == "contact":
            answer = f"contact {phone_masked(event.contact_phone)}"
        else:
            return NotConsumed()
        rt.output["answer"] = answer[:200]
        try:
            if event.kind == "contact":
                value = contact_validate(event, telegram_id=rt.data.user.telegram_id)
            else:
                value = answer_validate(rule, answer)
        except Invalid as exc:
            attempts = int(rt.execution.context.get("wait", {}).get("attempts", 0)) + 1
            rt.output["invalid"] = str(exc)
            if attempts >= int(step.get("max_attempts", DEFAULT_ATTEMPTS)):
                rt.output["gave_up"] = True
                return Goto(step.get("on_fail"))
            retry = step.get("retry_text")
            if retry:
                text = rt.render(retry)
            elif isinstance(exc, OwnMessage):
                own = rt.text(exc.args[0])
                text = own if isinstance(own, str) else str(exc)
            else:
                with translation.override(rt.language()):  # the user's, not the log's
                    problem = str(exc).rstrip(".")
                    text = gettext("That does not look right: %(problem)s.") % {"problem": problem}
            return self._ask(rt, text, attempts)
        rt.data.variable_set(step["variable"], value)
        rt.output["value"] = value
        if event.kind == "contact":
            rt.execution.context[KEYBOARD_REMOVE] = True
        return Goto(step.get("next"))

    def _attachment(self, rt: StepRuntime, event: InputEvent, kind: str) -> Outcome:
        """A photo, document or location answer: stored as a reference, not as bytes."""
        step = rt.step
        if event.kind == "command":
            return NotConsumed()  # a command is not an answer to "send a photo"
        if event.kind != kind:
            attempts = int(rt.execution.context.get("wait", {}).get("attempts", 0)) + 1
            rt.output["invalid"] = f"expected a {kind}, got {event.kind}"
            if attempts >= int(step.get("max_attempts", DEFAULT_ATTEMPTS)):
                rt.output["gave_up"] = True
                return Goto(step.get("on_fail"))
            retry = step.get("retry_text")
            if retry:
                text = rt.render(retry)
            else:
                with translation.override(rt.language()):
                    text = attachment_prompt(kind)
            return self._ask(rt, text, attempts)
        if kind == "location":
            value = f"{event.latitude:.6f},{event.longitude:.6f}"
        else:
            value = event.file_id
            rt.output["file_name"] = event.file_name[:200]
        rt.data.variable_set(step["variable"], value)
        rt.output["value"] = value
        return Goto(step.get("next"))
