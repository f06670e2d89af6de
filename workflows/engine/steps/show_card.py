"""``show_card``: send the user's loyalty card, a QR code a cashier scans, and its code.

A step of its own rather than an option of ``message``: the picture is made per user
(their card code, drawn on first use) rather than chosen by the operator, and the
card always carries the code as text too, for a till without a camera. The picture
is a :class:`~botplatform.conversation.Media` of ``data:`` bytes named after the code
(``cache_name``): the transport uploads it once per bot and sends Telegram's file id
after. A rotated code is a new name, so a new picture.
"""

from __future__ import annotations

import base64
import html

from botplatform.conversation import Media, SendMedia
from users.cards import card_code_display, card_link, card_qr_png
from users.customers import card_code_ensure
from workflows.engine.steps.base import (
    DESCRIPTION_FIELD,
    Checker,
    FieldSpec,
    Goto,
    Outcome,
    StepRuntime,
    StepType,
    step_ref,
)

CAPTION_LIMIT = 900  # Telegram allows 1024 for a caption; the code line takes the rest
DEFAULT_CAPTION = "Your loyalty card: show it at the till."


def card_photo_name(code: str) -> str:
    """The name the card's picture is cached under (per bot)."""
    return f"card:{code}"


class ShowCardStep(StepType):
    type = "show_card"
    label = "Show the customer card"
    description = "Send the user's loyalty card: a QR code for the cashier, and its code."
    fields = (
        FieldSpec(
            "caption",
            "template",
            "Caption",
            f"Shown under the card; the card code follows on its own line. "
            f"Empty: “{DEFAULT_CAPTION}”",
            schema={"type": "string", "maxLength": CAPTION_LIMIT},
        ),
        step_ref("next", "Then go to", "Empty: the conversation ends."),
        DESCRIPTION_FIELD,
    )
    atomic = True  # the first card code is drawn and stored

    def check(self, checker: Checker) -> None:
        checker.template("caption", limit=CAPTION_LIMIT)

    def run(self, rt: StepRuntime) -> Outcome:
        code = card_code_ensure(rt.data.user)
        caption = rt.render(rt.step.get("caption") or DEFAULT_CAPTION)[:CAPTION_LIMIT]
        caption = f"{caption}\n<code>{html.escape(card_code_display(code))}</code>"
        bot = rt.data.bot
        link = card_link(bot_username=bot.username if bot else "", code=code)
        picture = base64.b64encode(card_qr_png(link)).decode()
        rt.actions.append(
            SendMedia(
                chat_id=rt.chat_id,
                media=(
                    Media(
                        kind="photo",
                        ref=f"data:image/png;base64,{picture}",
                        caption=caption,
                        cache_name=card_photo_name(code),
                    ),
                ),
            )
        )
        return Goto(rt.step.get("next"))
