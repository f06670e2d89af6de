"""``data:`` bytes with a ``cache_name`` (a customer card's QR code) through the sender
and the Bot API double: the first send uploads them, Telegram's file id is kept per
bot under that name, later sends go by id; a forgotten id means a new upload."""

from __future__ import annotations

import base64
import io

import pytest
import segno
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from botplatform.cache import media_file_id_forget, media_file_id_get, media_file_id_remember
from botplatform.conversation import (
    Button,
    Media,
    SendMedia,
    SendMessage,
    actions_from_json,
    actions_to_json,
)
from botplatform.telegram.media import MediaUnavailable, cache_name, data_file
from botplatform.telegram.sender import actions_deliver
from tests.factories import bot_create


def _png(text: str) -> str:
    out = io.BytesIO()
    segno.make(text).save(out, kind="png", scale=4)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def _card(chat_id: int, ref: str, name: str = "", caption: str = "", buttons=()) -> SendMedia:
    medium = Media(kind="photo", ref=ref, caption=caption, cache_name=name)
    return SendMedia(chat_id=chat_id, media=(medium,), buttons=buttons)


def _id(bot, name: str) -> str | None:
    return media_file_id_get(bot_id=bot.pk, name=f"name:{name}")


def test_the_first_send_uploads_and_later_ones_reuse_the_file_id(double, tg_bot):
    photo = _card(
        801,
        _png("card-1"),
        "card:abc",
        caption="<b>Your card</b>",
        buttons=((Button(text="Open", url="https://example.com"),),),
    )
    actions_deliver(bot_id=tg_bot.pk, chat_id=801, actions=[photo])
    actions_deliver(bot_id=tg_bot.pk, chat_id=801, actions=[photo])

    first, second = double.calls_of("sendPhoto", tg_bot.token)
    assert isinstance(first.params["photo"], bytes) and first.params["photo"].startswith(b"\x89PNG")
    assert len(double.uploads) == 1
    file_id = _id(tg_bot, "card:abc")
    assert file_id is not None and second.params["photo"] == file_id
    assert second.params["caption"] == "<b>Your card</b>"
    assert second.params["parse_mode"] == "HTML"
    assert '"url": "https://example.com"' in second.params["reply_markup"]


def test_the_file_id_is_per_bot(double, tg_bot):
    other = bot_create(project=tg_bot.project)
    double.bot_add(other.token, other.username)
    photo = _card(802, _png("card-2"), "card:def")
    actions_deliver(bot_id=tg_bot.pk, chat_id=802, actions=[photo])
    actions_deliver(bot_id=other.pk, chat_id=802, actions=[photo])
    assert isinstance(double.calls_of("sendPhoto", other.token)[0].params["photo"], bytes)
    assert _id(tg_bot, "card:def") != _id(other, "card:def")


def test_a_file_id_telegram_forgot_is_replaced_by_a_new_upload(double, tg_bot):
    photo = _card(804, _png("card-4"), "card:ghi")
    actions_deliver(bot_id=tg_bot.pk, chat_id=804, actions=[photo])
    double.bot_file_ids[tg_bot.token].clear()  # Telegram no longer knows it
    actions_deliver(bot_id=tg_bot.pk, chat_id=804, actions=[photo])
    assert len(double.uploads) == 2
    assert _id(tg_bot, "card:ghi") in double.bot_file_ids[tg_bot.token]
    assert len(double.calls_of("sendPhoto", tg_bot.token, ok=True)) == 2


def test_bytes_without_a_name_are_uploaded_each_time(double, tg_bot):
    photo = _card(805, _png("card-5"))
    actions_deliver(bot_id=tg_bot.pk, chat_id=805, actions=[photo, photo])
    assert len(double.uploads) == 2


def test_a_photo_without_usable_bytes_is_dropped_and_the_rest_still_goes(double, tg_bot):
    actions = [
        _card(803, "data:image/png;base64,", "card:empty"),
        _card(803, "data:image/png;base64,not base64 at all!", "card:bad"),
        _card(803, "data:image/png;base64,aGk", "card:pad"),  # bad padding
        SendMessage(chat_id=803, text="after"),
    ]
    actions_deliver(bot_id=tg_bot.pk, chat_id=803, actions=actions)
    assert double.calls_of("sendPhoto", tg_bot.token) == []
    assert double.sent_texts(tg_bot.token, 803) == ["after"]
    assert _id(tg_bot, "card:empty") is None


def test_a_named_medium_survives_the_outbox_json():
    photo = _card(1, "data:image/png;base64,aGk=", "card:x", caption="c")
    assert actions_from_json(actions_to_json([photo])) == [photo]


_ODD = st.text(alphabet=st.characters(codec="utf-8"), max_size=300)


@hsettings(max_examples=300, deadline=None)
@given(
    body=_ODD | st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode()),
    header=_ODD,
    name=_ODD,
)
def test_hostile_data_refs_decode_or_are_refused_clearly(body, header, name):
    medium = Media(kind="photo", ref=f"data:{header},{body}", cache_name=name)
    try:
        handle = data_file(medium)
    except MediaUnavailable as exc:
        assert str(exc) in {"inline data is not base64", "inline data is empty"}
    else:
        assert handle.getvalue() == base64.b64decode(body) and handle.name
    assert cache_name(medium) == (f"name:{name}" if name else None)


def test_huge_data_decodes_in_one_piece():
    medium = Media(kind="document", ref="data:;base64," + "QUJD" * 2_000_000)
    assert data_file(medium).getbuffer().nbytes == 6_000_000
    with pytest.raises(MediaUnavailable):
        data_file(Media(kind="document", ref="data:;base64," + "QUJD" * 2_000_000 + "\x00"))


@hsettings(max_examples=50, deadline=None)
@given(names=st.lists(_ODD | st.text(min_size=5000, max_size=6000), min_size=2, max_size=2))
def test_odd_cache_names_are_kept_apart_in_redis(names):
    first, second = names
    media_file_id_remember(bot_id=-7, name=first, file_id="A")
    media_file_id_remember(bot_id=-7, name=second, file_id="B")
    assert media_file_id_get(bot_id=-7, name=second) == "B"
    assert media_file_id_get(bot_id=-7, name=first) == ("B" if first == second else "A")
    media_file_id_forget(bot_id=-7, name=first)
    media_file_id_forget(bot_id=-7, name=second)
    assert media_file_id_get(bot_id=-7, name=first) is None
