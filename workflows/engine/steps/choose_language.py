"""``choose_language``: a button per project language; the choice is stored on the user
and from then on picks the version of every per-language text (and the system texts)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import translation
from django.utils.translation import gettext

from botplatform.conversation import Button, InputEvent
from users.botusers import bot_user_language_set
from workflows.engine.steps.base import (
    DESCRIPTION_FIELD,
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
from workflows.engine.steps.message import engine_callback_data

# Each language's button shows its own name; other codes show the code.
LANGUAGE_NAMES = {
    "en": "English",
    "ru": "Русский",
    "uk": "Українська",
    "be": "Беларуская",
    "kk": "Қазақша",
    "de": "Deutsch",
    "fr": "Français",
    "es": "Español",
    "it": "Italiano",
    "pt": "Português",
    "tr": "Türkçe",
    "pl": "Polski",
    "ar": "العربية",
    "zh": "中文",
}


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code) or LANGUAGE_NAMES.get(code.split("-")[0]) or code


class ChooseLanguageStep(StepType):
    type = "choose_language"
    label = "Choose language"
    description = "Show a button per project language; store the user's choice."
    waits = True
    atomic = True
    target_fields = ("next", "on_timeout")
    fields = (
        FieldSpec(
            "text",
            "template",
            "Question",
            "Shown above the buttons. Empty: “Choose your language”, translated.",
            schema={"type": "string", "maxLength": TELEGRAM_TEXT_LIMIT},
            localized=True,
        ),
        step_ref("next", "Then go to", "Empty: the conversation ends."),
        TIMEOUT_FIELD,
        ON_TIMEOUT_FIELD,
        DESCRIPTION_FIELD,
    )

    def check(self, checker: Checker) -> None:
        checker.template("text", limit=TELEGRAM_TEXT_LIMIT)

    def run(self, rt: StepRuntime) -> Outcome:
        text = rt.step.get("text")
        if text:
            text = rt.render(text)
        else:
            with translation.override(rt.language()):
                text = gettext("Choose your language")
        seq = rt.next_seq()
        buttons = tuple(
            (
                Button(
                    text=language_name(code),
                    callback_data=engine_callback_data(rt.execution.pk, seq, index),
                ),
            )
            for index, code in enumerate(rt.languages())
        )
        rt.send(text, buttons=buttons)
        rt.output["text"] = text
        until = rt.now + timedelta(seconds=wait_timeout(rt.step))
        return Wait(kind="buttons", until=until, state={"seq": seq})

    def resume(self, rt: StepRuntime, event: InputEvent) -> Outcome:
        languages = rt.languages()
        code = None
        if event.kind == "callback":
            try:
                code = languages[int(event.callback_data.rsplit(":", 1)[1])]
            except (IndexError, ValueError):
                return NotConsumed()
        elif event.kind == "text":
            typed = event.text.strip().casefold()
            code = next((c for c in languages if typed in (c, language_name(c).casefold())), None)
        if code is None:
            return NotConsumed()
        bot_user_language_set(rt.data.user, code)
        rt.data.language = None  # the next text is picked in the new language
        rt.output["language"] = code
        return Goto(rt.step.get("next"))
