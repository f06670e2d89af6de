"""The customer card in the bot: a ``show_card`` step sends the QR code of the card's
deep link as a photo (uploaded once per bot, then by file id), with the code as text."""

from __future__ import annotations

import pytest

from botplatform.telegram.dispatch import update_run
from botplatform.telegram.journal import updates_record
from tests.workflows.conftest import publish
from users.cards import card_code_display, card_link, card_qr_png
from users.customers import card_code_rotate
from users.models import BotUser

CHAT = 750001

CARD = {
    "start": "card",
    "steps": {"card": {"type": "show_card", "caption": "Hello {{ user.first_name }}!"}},
}


def _run(bot, update: dict) -> None:
    rows = updates_record(bot_id=bot.pk, updates=[update])
    assert update_run(update_pk=rows[0].pk) == "done"


@pytest.fixture
def carding(double, tg_bot):
    publish(tg_bot.project, CARD, triggers=[{"type": "command", "command": "card"}])
    return tg_bot


def test_the_card_is_a_qr_of_its_deep_link_uploaded_once(double, carding):
    bot = carding
    _run(bot, double.command(bot.token, CHAT, "/card"))
    _run(bot, double.command(bot.token, CHAT, "/card"))

    user = BotUser.objects.get(project=bot.project, telegram_id=CHAT)
    assert len(user.card_code) == 12
    first, second = double.calls_of("sendPhoto", bot.token)
    link = card_link(bot_username=bot.username, code=user.card_code)
    assert link == f"https://t.me/{bot.username}?start=card_{user.card_code}"
    assert first.params["photo"] == card_qr_png(link)  # the QR says the link
    assert isinstance(second.params["photo"], str) and second.params["photo"] in double.files
    assert len(double.uploads) == 1
    caption = first.params["caption"]
    assert caption == f"Hello User{CHAT}!\n<code>{card_code_display(user.card_code)}</code>"
    assert first.params["parse_mode"] == "HTML"


def test_a_rotated_code_is_a_new_picture(double, carding):
    bot = carding
    _run(bot, double.command(bot.token, CHAT, "/card"))
    user = BotUser.objects.get(project=bot.project, telegram_id=CHAT)
    old = user.card_code
    card_code_rotate(user)
    _run(bot, double.command(bot.token, CHAT, "/card"))
    first, second = double.calls_of("sendPhoto", bot.token)
    assert isinstance(second.params["photo"], bytes)  # uploaded anew: another QR
    assert second.params["photo"] != first.params["photo"]
    assert user.card_code != old and user.card_code in second.params["caption"].replace(" ", "")
