"""Media through the Bot API double: a stored file is uploaded once per bot (multipart),
then sent by its file_id; albums, locations, venues; the upload checks."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from botplatform.cache import media_file_id_get
from botplatform.conversation import (
    Button,
    Media,
    SendLocation,
    SendMedia,
    SendMessage,
    actions_from_json,
    actions_to_json,
)
from botplatform.media import media_file_create, media_upload_check
from botplatform.telegram.sender import actions_deliver
from tests.factories import bot_create

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    return tmp_path


def _photo(project, name="card.png", data=PNG):
    return media_file_create(
        project=project,
        kind="photo",
        title="Card",
        upload=SimpleUploadedFile(name, data, content_type="image/png"),
    )


def _file_id(media, bot) -> str | None:
    return media_file_id_get(bot_id=bot.pk, name=f"stored:{media.pk}")


def _send(bot, *actions):
    actions_deliver(bot_id=bot.pk, chat_id=actions[0].chat_id, actions=list(actions))


def test_a_stored_photo_is_uploaded_once_per_bot_then_sent_by_file_id(double, tg_bot, media_root):
    photo = _photo(tg_bot.project)
    action = SendMedia(
        chat_id=501,
        media=(Media(kind="photo", ref=f"stored:{photo.pk}", caption="<b>Hi</b> Ann"),),
        buttons=((Button("Next", "w:1:1:0"),),),
    )
    _send(tg_bot, action)
    _send(tg_bot, action)
    calls = double.calls_of("sendPhoto", tg_bot.token)
    assert len(calls) == 2
    assert [u[:4] for u in double.uploads] == [(tg_bot.token, "sendPhoto", "photo", "card.png")]
    assert double.uploads[0][4] == len(PNG)
    file_id = _file_id(photo, tg_bot)
    assert "__files__" in calls[0].params and calls[1].params["photo"] == file_id
    assert calls[1].params["caption"] == "<b>Hi</b> Ann"
    assert json.loads(calls[1].params["reply_markup"])["inline_keyboard"][0][0]["text"] == "Next"
    # Another bot of the project has its own file ids: it uploads once too.
    other = bot_create(project=tg_bot.project)
    double.bot_add(other.token, other.username)
    _send(other, action)
    _send(other, action)
    assert len(double.uploads) == 2
    assert _file_id(photo, other) not in (None, file_id)


def test_a_file_id_telegram_forgot_is_replaced_by_a_new_upload(double, tg_bot, media_root):
    photo = _photo(tg_bot.project)
    action = SendMedia(chat_id=502, media=(Media(kind="photo", ref=f"stored:{photo.pk}"),))
    _send(tg_bot, action)
    double.bot_file_ids[tg_bot.token].clear()  # Telegram no longer knows it
    _send(tg_bot, action)
    assert len(double.uploads) == 2
    kept = _file_id(photo, tg_bot)
    assert kept in double.bot_file_ids[tg_bot.token]


def test_a_deleted_file_is_not_sent_by_its_cached_file_id(double, tg_bot, media_root):
    photo = _photo(tg_bot.project)
    action = SendMedia(chat_id=506, media=(Media(kind="photo", ref=f"stored:{photo.pk}"),))
    _send(tg_bot, action)
    assert _file_id(photo, tg_bot) is not None
    photo.delete()
    _send(tg_bot, action, SendMessage(chat_id=506, text="after"))
    assert len(double.calls_of("sendPhoto", tg_bot.token)) == 1
    assert double.sent_texts(tg_bot.token, 506) == ["after"]


def test_an_album_uploads_each_file_once_and_its_buttons_follow_it(double, tg_bot, media_root):
    first, second = _photo(tg_bot.project, "a.png"), _photo(tg_bot.project, "b.png")
    action = SendMedia(
        chat_id=503,
        media=(
            Media(kind="photo", ref=f"stored:{first.pk}", caption="Both"),
            Media(kind="photo", ref=f"stored:{second.pk}"),
        ),
        buttons=((Button("Order", "w:1:1:0"),),),
        text="Which one?",
    )
    _send(tg_bot, action)
    _send(tg_bot, action)
    groups = double.calls_of("sendMediaGroup", tg_bot.token)
    assert len(groups) == 2 and len(double.uploads) == 2
    second_media = json.loads(groups[1].params["media"])
    assert [item["media"] for item in second_media] == [
        _file_id(first, tg_bot),
        _file_id(second, tg_bot),
    ]
    assert double.sent_texts(tg_bot.token, 503) == ["Which one?", "Which one?"]


def test_locations_and_venues(double, tg_bot):
    _send(
        tg_bot,
        SendLocation(chat_id=504, latitude=55.75, longitude=37.62),
        SendLocation(
            chat_id=504, latitude=55.75, longitude=37.62, title="Café", address="Tverskaya 1"
        ),
    )
    assert double.calls_of("sendLocation", tg_bot.token)[0].params["latitude"] == "55.75"
    venue = double.calls_of("sendVenue", tg_bot.token)[0].params
    assert (venue["title"], venue["address"]) == ("Café", "Tverskaya 1")


def test_a_url_and_inline_bytes_are_sent_without_caching(double, tg_bot):
    _send(
        tg_bot,
        SendMedia(chat_id=505, media=(Media(kind="document", ref="https://example.com/a.pdf"),)),
        SendMedia(
            chat_id=505,
            media=(Media(kind="photo", ref="data:image/png;base64,iVBORw0KGgoAAAA="),),
        ),
    )
    assert double.calls_of("sendDocument", tg_bot.token)[0].params["document"].startswith("https")
    assert [u[1] for u in double.uploads] == ["sendPhoto"]
    assert double.calls_of("sendPhoto", tg_bot.token)[0].params["photo"].startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "kind, method",
    [
        ("photo", "sendPhoto"),
        ("video", "sendVideo"),
        ("animation", "sendAnimation"),
        ("audio", "sendAudio"),
        ("voice", "sendVoice"),
        ("document", "sendDocument"),
        ("sticker", "sendSticker"),
    ],
)
def test_each_kind_goes_by_its_own_method_with_its_caption(double, tg_bot, kind, method):
    medium = Media(kind=kind, ref="data:application/octet-stream;base64,aGk=", caption="<b>c</b>")
    _send(tg_bot, SendMedia(chat_id=507, media=(medium,), buttons=((Button("Go", "g"),),)))
    [call] = double.calls_of(method, tg_bot.token)
    assert "Go" in call.params["reply_markup"]
    if kind != "sticker":  # Telegram shows no caption on a sticker
        assert (call.params["caption"], call.params["parse_mode"]) == ("<b>c</b>", "HTML")


def test_media_actions_survive_the_json_outbox():
    actions = [
        SendMedia(
            chat_id=1,
            media=(Media("photo", "stored:3", "c"), Media("video", "abc", filename="v.mp4")),
            buttons=((Button("A", "a"),),),
            text="t",
        ),
        SendLocation(chat_id=1, latitude=1.5, longitude=-2.25, title="T", address="A"),
    ]
    assert actions_from_json(json.loads(json.dumps(actions_to_json(actions)))) == actions


# --- The upload checks ---------------------------------------------------------------


def test_refused_uploads_say_why_and_store_nothing(db, project, media_root):
    from botplatform.models import MediaFile

    cases = [
        ("photo", SimpleUploadedFile("x.png", b"GIF89a" + b"\x00" * 10), "not a JPEG"),
        ("photo", SimpleUploadedFile("x.pdf", PNG), "must be one of"),
        ("photo", SimpleUploadedFile("x.png", b""), "empty"),
        ("sticker", SimpleUploadedFile("s.webp", b"RIFF" + b"\x00" * 600_000), "at most 512 KB"),
        ("hologram", SimpleUploadedFile("x.png", PNG), "Choose what the file is"),
    ]
    for kind, upload, expected in cases:
        with pytest.raises(ValidationError) as raised:
            media_file_create(project=project, kind=kind, title="", upload=upload)
        assert expected in " ".join(raised.value.messages)
    assert not MediaFile.objects.exists()
    assert not any(media_root.rglob("*.*"))


@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["photo", "document", "sticker", "voice", "x", ""]),
    name=st.text(max_size=400),
    size=st.integers(min_value=-(2**70), max_value=2**70),
    head=st.binary(max_size=32),
)
def test_the_upload_check_never_raises_on_hostile_input(kind, name, size, head):
    problems = media_upload_check(kind=kind, name=name, size=size, head=head)
    assert isinstance(problems, list) and all(isinstance(p, str) and p for p in problems)
    if "\x00" in name:
        assert problems
