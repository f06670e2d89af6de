"""``message``: send a templated text, optionally with inline buttons or a reply keyboard,
or a photo, file, album or location with the text as caption (``steps/media.py``).

A message with buttons that lead to steps waits for a press; buttons that open a URL
or carry free callback data (handled by a trigger) do not make it wait.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from botplatform.conversation import Button, InputEvent
from workflows.engine.steps.base import (
    CALLBACK_DATA_LIMIT,
    CONTACT_BUTTON_FIELD,
    DESCRIPTION_FIELD,
    KEYBOARD_BUTTON_LIMIT,
    KEYBOARD_FIELD,
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
    text_versions,
    wait_timeout,
)
from workflows.engine.steps.media import MEDIA_FIELDS, has_media, media_check, media_send
from workflows.engine.templating import template_check


def button_rows(step: dict) -> list[list[dict]]:
    """The ``buttons`` field as rows; a row may be written as a single button."""
    rows = step.get("buttons") or []
    if not isinstance(rows, list):
        return []
    result = []
    for row in rows:
        if isinstance(row, dict):
            result.append([row])
        elif isinstance(row, list):
            result.append([button for button in row if isinstance(button, dict)])
    return result


def flat_buttons(step: dict) -> list[dict]:
    return [button for row in button_rows(step) for button in row]


def engine_callback_data(execution_id: int, seq: int, index: int) -> str:
    """What a step button sends back: which execution, which wait, which button."""
    return f"w:{execution_id}:{seq}:{index}"


def contact_button_label(rt: StepRuntime, step: dict) -> str:
    """The rendered "share my phone" label of a step (plain text, bounded), or ""."""
    label = rt.text(step.get("request_contact"))
    if not isinstance(label, str) or not label.strip():
        return ""
    return rt.render(label, escape=False).strip()[:KEYBOARD_BUTTON_LIMIT]


class MessageStep(StepType):
    type = "message"
    label = "Send a message"
    description = "Send a text; waits for a press when a button has 'next'."
    fields = (
        FieldSpec(
            "text",
            "template",
            "Text",
            "Telegram HTML (<b>, <i>, <a href=…>). Insert values with {{ user.first_name }}, "
            "{{ user.balance }}, {{ vars.city }}. With a photo or file: its caption (at most "
            "1024 characters; may then be empty).",
            schema={"type": "string", "maxLength": TELEGRAM_TEXT_LIMIT},
            localized=True,
        ),
        FieldSpec(
            "buttons",
            "buttons",
            "Buttons",
            "Rows of buttons; each goes to a step ('next'), opens a link ('url') "
            "or sends data for a trigger ('data').",
            schema={
                "type": "array",
                "items": {
                    "oneOf": [
                        {"$ref": "#/$defs/button"},
                        {"type": "array", "items": {"$ref": "#/$defs/button"}},
                    ]
                },
            },
            problem="a list of rows of buttons",
        ),
        *MEDIA_FIELDS,
        KEYBOARD_FIELD,
        CONTACT_BUTTON_FIELD,
        FieldSpec(
            "remove_keyboard",
            "bool",
            "Remove the reply keyboard shown earlier",
            schema={"type": "boolean"},
        ),
        FieldSpec(
            "edit",
            "bool",
            "Edit the pressed message instead of sending a new one",
            schema={"type": "boolean"},
        ),
        step_ref(
            "next",
            "Then go to",
            "For a message without step buttons. Empty: the conversation ends.",
        ),
        TIMEOUT_FIELD,
        ON_TIMEOUT_FIELD,
        DESCRIPTION_FIELD,
    )
    target_fields = ("next", "on_timeout")

    def waits_for(self, step: dict) -> bool:
        return any(button.get("next") for button in flat_buttons(step))

    def targets(self, step: dict) -> list[tuple[str, Any]]:
        found = super().targets(step)
        for index, button in enumerate(flat_buttons(step)):
            if button.get("next") is not None:
                found.append(
                    (f"button {index + 1} ('{str(button.get('text', ''))[:64]}')", button["next"])
                )
        return found

    def check(self, checker: Checker) -> None:
        step = checker.step
        checker.template("text", required=not has_media(step), limit=TELEGRAM_TEXT_LIMIT)
        media_check(checker)
        raw = step.get("buttons")
        if raw is not None and not isinstance(raw, list):
            checker.add("'buttons' must be a list of rows")
        for index, button in enumerate(flat_buttons(step), start=1):
            label = button.get("text")
            where = f"button {index}"
            if isinstance(label, dict) and label:
                for place, version in text_versions(label, f"{where} text", checker.add):
                    problem = template_check(version) if version.strip() else "is empty"
                    if problem:
                        checker.add(f"{place}: {problem}")
                label = next(iter(label.values()))
            elif not isinstance(label, str) or not label.strip():
                checker.add(f"{where} has no text")
            else:
                problem = template_check(label)
                if problem:
                    checker.add(f"{where} text: {problem}")
            kinds = [key for key in ("next", "url", "data") if button.get(key)]
            if not kinds:
                checker.add(
                    f"{where} ('{str(label)[:64]}') has no target: give it 'next' (a step), "
                    "'url' (a link) or 'data' (callback data for a trigger)"
                )
            elif len(kinds) > 1:
                checker.add(
                    f"{where} ('{str(label)[:64]}') has several targets: {', '.join(kinds)}"
                )
            url = button.get("url")
            if url is not None and (
                not isinstance(url, str) or not url.startswith(("https://", "http://", "tg://"))
            ):
                checker.add(f"{where} url must start with https://, http:// or tg://")
            data = button.get("data")
            if data is not None:
                if not isinstance(data, str):
                    checker.add(f"{where} data must be a text")
                elif len(data.encode()) > CALLBACK_DATA_LIMIT:
                    checker.add(
                        f"{where} data is {len(data.encode())} bytes; Telegram allows "
                        f"at most {CALLBACK_DATA_LIMIT}"
                    )
                elif data.startswith("w:"):
                    checker.add(f"{where} data must not start with 'w:' (reserved)")
        keyboard = step.get("reply_keyboard")
        if keyboard is not None and not (
            isinstance(keyboard, list)
            and all(
                isinstance(row, list) and all(isinstance(t, str) for t in row) for row in keyboard
            )
        ):
            checker.add("'reply_keyboard' must be a list of rows of texts")
        checker.template("request_contact")

    def run(self, rt: StepRuntime) -> Outcome:
        step = rt.step
        text = rt.render(step.get("text") or "")
        waits = self.waits_for(step)
        seq = rt.next_seq() if waits else 0
        rows = []
        index = 0
        for row in button_rows(step):
            built = []
            for button in row:
                label = rt.render(button.get("text", ""), escape=False)
                if button.get("next"):
                    built.append(
                        Button(
                            text=label,
                            callback_data=engine_callback_data(rt.execution.pk, seq, index),
                        )
                    )
                elif button.get("url"):
                    built.append(Button(text=label, url=rt.render(button["url"], escape=False)))
                else:
                    built.append(Button(text=label, callback_data=button.get("data", "")))
                index += 1
            if built:
                rows.append(tuple(built))
        keyboard = tuple(tuple(row) for row in step.get("reply_keyboard") or () if row)
        if has_media(step):
            media_send(rt, text, tuple(rows))
        else:
            rt.send(
                text,
                buttons=tuple(rows),
                reply_keyboard=keyboard,
                remove_reply_keyboard=bool(step.get("remove_keyboard")),
                edit=bool(step.get("edit")),
                contact_button=contact_button_label(rt, step),
            )
        rt.output["text"] = text
        if waits:
            until = rt.now + timedelta(seconds=wait_timeout(step))
            return Wait(kind="buttons", until=until, state={"seq": seq})
        return Goto(step.get("next"))

    def resume(self, rt: StepRuntime, event: InputEvent) -> Outcome:
        buttons = flat_buttons(rt.step)
        if event.kind == "callback":
            try:
                index = int(event.callback_data.rsplit(":", 1)[1])
                button = buttons[index]
            except (IndexError, ValueError):
                return NotConsumed()
            rt.output["pressed"] = button.get("text", "")
            return Goto(button.get("next"))
        if event.kind == "text":
            typed = event.text.strip().casefold()
            for button in buttons:
                if (
                    button.get("next")
                    and rt.render(button.get("text", ""), escape=False).strip().casefold() == typed
                ):
                    rt.output["pressed"] = button.get("text", "")
                    return Goto(button["next"])
        return NotConsumed()
