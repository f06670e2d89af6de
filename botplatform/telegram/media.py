"""Send photos, documents, videos, ..., albums and locations: each stored file is
uploaded to Telegram once per bot, then sent by its ``file_id``.

A medium's ``ref`` (see :class:`botplatform.conversation.Media`): ``stored:<id>``
(an admin upload, ``botplatform.models.MediaFile``), a URL, ``data:`` bytes, or a
``file_id``. A stored file, and ``data:`` bytes with a ``cache_name`` (a customer
card's QR code), are uploaded once per bot: the ``file_id`` Telegram answers with is
kept (``botplatform.cache.media_file_id_get``, the one file id cache) and the next
send by that bot carries only the id. If Telegram no longer knows a cached id
("wrong file identifier"), the id is forgotten and the file uploaded again.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
from collections.abc import Callable

from telebot import types

from botplatform.cache import media_file_id_forget, media_file_id_get, media_file_id_remember
from botplatform.conversation import Media, SendLocation, SendMedia, SendMessage
from botplatform.models import Bot, MediaFile

logger = logging.getLogger(__name__)

CAPTION_LIMIT = 1024
STORED = "stored:"
_INPUT_MEDIA = {
    "photo": types.InputMediaPhoto,
    "video": types.InputMediaVideo,
    "document": types.InputMediaDocument,
    "audio": types.InputMediaAudio,
}


class MediaUnavailable(Exception):
    """A stored file that is gone (deleted in the admin, storage lost)."""


def stored_id(ref: str) -> int | None:
    if not ref.startswith(STORED):
        return None
    try:
        return int(ref[len(STORED) :])
    except ValueError:
        return None


def cache_name(medium: Media) -> str | None:
    """The name this medium's ``file_id`` is cached under (per bot), or None: a URL,
    a ``file_id`` and bytes without a ``cache_name`` are sent as they are."""
    media_id = stored_id(medium.ref)
    if media_id is not None:
        return f"{STORED}{media_id}"
    if medium.ref.startswith("data:") and medium.cache_name:
        return f"name:{medium.cache_name}"
    return None


def data_file(medium: Media) -> io.BytesIO:
    """The bytes of a ``data:`` ref as a named file for telebot's multipart upload;
    :class:`MediaUnavailable` when they are not base64 or empty."""
    header, _, encoded = medium.ref.partition(",")
    try:
        handle = io.BytesIO(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        raise MediaUnavailable("inline data is not base64") from None
    if not handle.getbuffer().nbytes:
        raise MediaUnavailable("inline data is empty")
    extension = "png" if "png" in header else "jpg" if "jpeg" in header else "bin"
    handle.name = medium.filename or f"file.{extension}"
    return handle


def _payload(bot: Bot, medium: Media) -> tuple[object, str | None]:
    """(what to hand to telebot, the cache name to keep the ``file_id`` under when it
    is an upload).

    Called again for each attempt, so a retried upload reads the file from the start.
    """
    name = cache_name(medium)
    media_id = stored_id(medium.ref)
    if media_id is not None:
        stored = MediaFile.objects.filter(pk=media_id).first()
        if stored is None:  # deleted in the admin: its cached id must not be sent
            raise MediaUnavailable(f"stored:{media_id} does not exist")
        cached = media_file_id_get(bot_id=bot.pk, name=name)
        if cached:
            return cached, None
        handle = io.BytesIO(stored.file.open("rb").read())
        stored.file.close()
        handle.name = medium.filename or stored.file.name.rsplit("/", 1)[-1]
        return handle, name
    if medium.ref.startswith("data:"):
        cached = media_file_id_get(bot_id=bot.pk, name=name) if name else None
        if cached:
            return cached, None
        return data_file(medium), name
    return medium.ref, None


def _file_id_of(message: dict, kind: str) -> str:
    """The ``file_id`` in Telegram's answer to a send of ``kind``."""
    if not isinstance(message, dict):
        return ""
    value = message.get(kind)
    if kind == "photo" and isinstance(value, list) and value:
        value = value[-1]  # the largest size
    if not isinstance(value, dict) and kind in {"animation", "sticker"}:
        value = message.get("document")
    return value.get("file_id", "") if isinstance(value, dict) else ""


# Kinds telebot sends with a method of their own, all taking a caption and a markup.
_SEND_METHODS = {
    "photo": "send_photo",
    "video": "send_video",
    "animation": "send_animation",
    "audio": "send_audio",
    "voice": "send_voice",
}


def _send_one(api, bot: Bot, chat_id: int, medium: Media, data, markup, parse_mode) -> dict:
    caption = medium.caption[:CAPTION_LIMIT] or None
    token = bot.token
    method = _SEND_METHODS.get(medium.kind)
    if method is not None:
        return getattr(api, method)(
            token, chat_id, data, caption=caption, reply_markup=markup, parse_mode=parse_mode
        )
    if medium.kind == "sticker":
        return api.send_data(token, chat_id, data, "sticker", reply_markup=markup)
    return api.send_data(token, chat_id, data, "document", reply_markup=markup,
                         parse_mode=parse_mode, caption=caption)  # fmt: skip


def media_send(
    bot: Bot,
    action: SendMedia,
    *,
    call: Callable,
    api,
    markup_build: Callable,
    send_message: Callable,
) -> list[int]:
    """Perform a :class:`SendMedia` (one medium, or an album) through ``call`` (the
    sender's rate-limited, retrying call) and keep uploaded files' ids. Returns the ids
    of the messages sent."""
    if not action.media:
        return []
    parse_mode = action.parse_mode or None
    if len(action.media) == 1:
        medium = action.media[0]
        markup = markup_build(action)
        for attempt in (1, 2):
            state: dict = {}

            def send(medium=medium, state=state):
                data, upload_as = _payload(bot, medium)
                state["upload_as"] = upload_as
                return _send_one(api, bot, action.chat_id, medium, data, markup, parse_mode)

            try:
                message = call(send)
            except Exception as exc:
                name = cache_name(medium)
                if attempt == 1 and name and _stale_file_id(exc):
                    media_file_id_forget(bot_id=bot.pk, name=name)
                    continue
                raise
            if state.get("upload_as"):
                media_file_id_remember(
                    bot_id=bot.pk,
                    name=state["upload_as"],
                    file_id=_file_id_of(message, medium.kind),
                )
            return message_ids(message)
        return []
    state = {}

    def send_album():
        items, uploads = [], []
        for index, medium in enumerate(action.media[:10]):
            data, upload_as = _payload(bot, medium)
            uploads.append((index, medium, upload_as))
            cls = _INPUT_MEDIA.get(medium.kind, types.InputMediaDocument)
            items.append(
                cls(data, caption=medium.caption[:CAPTION_LIMIT] or None, parse_mode=parse_mode)
            )
        state["uploads"] = uploads
        return api.send_media_group(bot.token, action.chat_id, items)

    messages = call(send_album)
    for index, medium, upload_as in state.get("uploads", []):
        if upload_as and isinstance(messages, list) and index < len(messages):
            media_file_id_remember(
                bot_id=bot.pk, name=upload_as, file_id=_file_id_of(messages[index], medium.kind)
            )
    ids = message_ids(messages)
    if action.buttons:  # an album takes no keyboard: the buttons come in a message after it
        ids += (
            send_message(
                bot,
                SendMessage(
                    chat_id=action.chat_id,
                    text=action.text or "⬆️",
                    parse_mode=action.parse_mode,
                    buttons=action.buttons,
                ),
            )
            or []
        )
    return ids


def message_ids(result: object) -> list[int]:
    """The ``message_id`` of each message in a Bot API answer (one or a list); the
    sender's answers are dicts (``telebot.apihelper``)."""
    items = result if isinstance(result, list) else [result]
    return [
        item["message_id"]
        for item in items
        if isinstance(item, dict) and isinstance(item.get("message_id"), int)
    ]


def _stale_file_id(exc: Exception) -> bool:
    error = getattr(exc, "error", None)
    description = (getattr(error, "description", "") or "").lower()
    return "file identifier" in description or "wrong file_id" in description


def location_send(bot: Bot, action: SendLocation, *, call: Callable, api, markup) -> list[int]:
    """Perform a :class:`SendLocation`: a venue when it has a title and an address;
    returns the id of the message sent."""
    if action.title and action.address:
        return message_ids(call(
            lambda: api.send_venue(
                bot.token, action.chat_id, action.latitude, action.longitude,
                action.title, action.address, reply_markup=markup,
            )
        ))  # fmt: skip
    return message_ids(call(
        lambda: api.send_location(
            bot.token, action.chat_id, action.latitude, action.longitude, reply_markup=markup
        )
    ))  # fmt: skip
