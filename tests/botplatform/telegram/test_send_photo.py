"""SendPhoto through the sender and the Bot API double: the first send uploads the
image, Telegram's file id is cached per bot, later sends go by that id."""

from __future__ import annotations

import base64
import io

import segno

from botplatform.cache import photo_file_id_get
from botplatform.conversation import (
    Button,
    SendMessage,
    SendPhoto,
    actions_from_json,
    actions_to_json,
)
from botplatform.telegram.sender import actions_deliver
from tests.factories import bot_create


def _png(text: str) -> str:
    out = io.BytesIO()
    segno.make(text).save(out, kind="png", scale=4)
    return base64.b64encode(out.getvalue()).decode()


def test_the_first_send_uploads_and_later_ones_reuse_the_file_id(double, tg_bot):
    photo = SendPhoto(
        chat_id=801,
        caption="<b>Your card</b>",
        upload=_png("card-1"),
        cache_as="card:abc",
        buttons=((Button(text="Open", url="https://example.com"),),),
    )
    actions_deliver(bot_id=tg_bot.pk, chat_id=801, actions=[photo])
    actions_deliver(bot_id=tg_bot.pk, chat_id=801, actions=[photo])

    first, second = double.calls_of("sendPhoto", tg_bot.token)
    assert isinstance(first.params["photo"], bytes) and first.params["photo"].startswith(b"\x89PNG")
    file_id = photo_file_id_get(bot_id=tg_bot.pk, name="card:abc")
    assert file_id is not None and second.params["photo"] == file_id
    assert second.params["caption"] == "<b>Your card</b>"
    assert second.params["parse_mode"] == "HTML"
    assert '"url": "https://example.com"' in second.params["reply_markup"]


def test_the_file_id_is_per_bot(double, tg_bot):
    other = bot_create(project=tg_bot.project)
    double.bot_add(other.token, other.username)
    photo = SendPhoto(chat_id=802, upload=_png("card-2"), cache_as="card:def")
    actions_deliver(bot_id=tg_bot.pk, chat_id=802, actions=[photo])
    actions_deliver(bot_id=other.pk, chat_id=802, actions=[photo])
    assert isinstance(double.calls_of("sendPhoto", other.token)[0].params["photo"], bytes)
    assert photo_file_id_get(bot_id=tg_bot.pk, name="card:def") != photo_file_id_get(
        bot_id=other.pk, name="card:def"
    )


def test_a_photo_without_a_usable_image_is_dropped_and_the_rest_still_goes(double, tg_bot):
    actions = [
        SendPhoto(chat_id=803, caption="x"),
        SendPhoto(chat_id=803, upload="not base64 at all!"),
        SendPhoto(chat_id=803, upload="aGk"),  # bad padding
        SendMessage(chat_id=803, text="after"),
    ]
    actions_deliver(bot_id=tg_bot.pk, chat_id=803, actions=actions)
    assert double.calls_of("sendPhoto", tg_bot.token, ok=False) == []
    assert double.sent_texts(tg_bot.token, 803) == ["after"]


def test_a_photo_survives_the_outbox_json():
    photo = SendPhoto(chat_id=1, caption="c", upload="aGk=", cache_as="card:x")
    assert actions_from_json(actions_to_json([photo])) == [photo]
