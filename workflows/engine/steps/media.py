"""What a ``message`` step sends besides text: a photo, document, video, animation,
audio, voice or sticker (``media``), an album (``album``), a location or venue
(``location``). The step's text becomes the caption.

A medium names its file one way: ``file`` (the id of a file uploaded in the admin,
*Media files*; each bot uploads it to Telegram once, then sends its ``file_id``),
``url`` (Telegram fetches it) or ``file_id`` (a template, e.g. ``{{ vars.photo }}``
saved by an ``input`` of type photo). The actions are the vocabulary's
:class:`~botplatform.conversation.SendMedia` and
:class:`~botplatform.conversation.SendLocation`.
"""

from __future__ import annotations

import math
from typing import Any

from botplatform.conversation import (
    ALBUM_KINDS,
    MEDIA_KINDS,
    Media,
    SendLocation,
    SendMedia,
    SendMessage,
)
from workflows.engine.steps.base import (
    Checker,
    FieldSpec,
    StepRuntime,
    localized_schema,
    text_versions,
)
from workflows.engine.templating import template_check

CAPTION_LIMIT = 1024
ALBUM_MAX = 10

_ITEM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"enum": list(MEDIA_KINDS)},
        "file": {"type": "integer", "minimum": 1},
        "url": {"type": "string", "maxLength": 2000},
        "file_id": {"type": "string", "maxLength": 500},
        "caption": localized_schema({"type": "string", "maxLength": CAPTION_LIMIT}),
        "filename": {"type": "string", "maxLength": 150},
    },
    "required": ["type"],
    "additionalProperties": False,
}
MEDIA_FIELDS = (
    FieldSpec(
        "media",
        "json",
        "Photo, file, video…",
        'Sent with the text as its caption, e.g. {"type": "photo", "file": 3} (a file '
        'uploaded under Media files), {"type": "document", "url": "https://…"} or '
        '{"type": "photo", "file_id": "{{ vars.photo }}"}. Types: ' + ", ".join(MEDIA_KINDS) + ".",
        schema=_ITEM,
        problem='an object like {"type": "photo", "file": 3}',
    ),
    FieldSpec(
        "album",
        "json",
        "Album",
        "2 to 10 photos, videos, documents or audio files sent together, each like "
        '{"type": "photo", "file": 3}. The text is the caption of the first; with buttons '
        "it comes in a message after the album.",
        schema={"type": "array", "items": _ITEM, "minItems": 2, "maxItems": ALBUM_MAX},
        problem="a list of 2 to 10 media",
    ),
    FieldSpec(
        "location",
        "json",
        "Location or venue",
        'A point on the map: {"latitude": 55.75, "longitude": 37.62}; add "title" and '
        '"address" for a venue. The text, if any, follows in a message.',
        schema={
            "type": "object",
            "properties": {
                "latitude": {"type": "number", "minimum": -90, "maximum": 90},
                "longitude": {"type": "number", "minimum": -180, "maximum": 180},
                "title": {"type": "string", "maxLength": 256},
                "address": {"type": "string", "maxLength": 256},
            },
            "required": ["latitude", "longitude"],
            "additionalProperties": False,
        },
        problem='an object like {"latitude": 55.75, "longitude": 37.62}',
    ),
)


def has_media(step: dict) -> bool:
    return any(step.get(key) for key in ("media", "album", "location"))


def _item_check(checker: Checker, item: Any, where: str, *, album: bool) -> None:
    if not isinstance(item, dict):
        checker.add(f'{where} must be an object like {{"type": "photo", "file": 3}}')
        return
    kind = item.get("type")
    if kind not in MEDIA_KINDS:
        checker.add(f"{where}: 'type' must be one of: {', '.join(MEDIA_KINDS)}")
    elif album and kind not in ALBUM_KINDS:
        checker.add(f"{where}: an album takes only {', '.join(ALBUM_KINDS)}")
    sources = [key for key in ("file", "url", "file_id") if item.get(key) not in (None, "")]
    if len(sources) != 1:
        checker.add(f"{where}: give exactly one of 'file', 'url' or 'file_id'")
    file = item.get("file")
    if file is not None and (isinstance(file, bool) or not isinstance(file, int) or file < 1):
        checker.add(f"{where}: 'file' is the number of an uploaded file (Media files)")
    url = item.get("url")
    if url is not None and (not isinstance(url, str) or not url.startswith("https://")):
        checker.add(f"{where}: 'url' must start with https://")
    value = item.get("file_id")
    if value is not None:
        problem = template_check(value) if isinstance(value, str) else "must be a text"
        if problem:
            checker.add(f"{where} file_id: {problem}")
    if item.get("caption") is not None:
        for place, text in text_versions(item["caption"], f"{where} caption", checker.add):
            problem = template_check(text)
            if problem:
                checker.add(f"{place}: {problem}")


def media_check(checker: Checker) -> None:
    """Publish-time checks of ``media``, ``album`` and ``location``."""
    step = checker.step
    present = [key for key in ("media", "album", "location") if step.get(key)]
    if len(present) > 1:
        checker.add(f"use one of 'media', 'album' or 'location', not {' and '.join(present)}")
    if not present:
        return
    if step.get("reply_keyboard") or step.get("edit"):
        checker.add(
            "a reply keyboard or 'edit' cannot go with media: use a message step of its own"
        )
    text = step.get("text")
    if isinstance(text, str) and len(text) > CAPTION_LIMIT and "location" not in present:
        checker.add(f"the caption ('text') is {len(text)} characters; at most {CAPTION_LIMIT}")
    if "media" in present:
        _item_check(checker, step["media"], "media", album=False)
    if "album" in present:
        album = step["album"]
        if not isinstance(album, list) or not 2 <= len(album) <= ALBUM_MAX:
            checker.add(f"'album' must be a list of 2 to {ALBUM_MAX} media")
        else:
            for index, item in enumerate(album, start=1):
                _item_check(checker, item, f"album item {index}", album=True)
    if "location" in present:
        location = step["location"]
        if not isinstance(location, dict) or not all(
            isinstance(location.get(key), int | float)
            and not isinstance(location.get(key), bool)
            and math.isfinite(location.get(key))
            and abs(location.get(key)) <= limit
            for key, limit in (("latitude", 90), ("longitude", 180))
        ):
            checker.add("'location' needs a latitude (-90..90) and a longitude (-180..180)")


def _medium(rt: StepRuntime, item: dict, caption: str) -> Media:
    if item.get("file"):
        ref = f"stored:{int(item['file'])}"
    elif item.get("url"):
        ref = str(item["url"])
    else:
        ref = rt.render(str(item.get("file_id", "")), escape=False).strip()
    if item.get("caption"):
        caption = rt.render(item["caption"])
    return Media(
        kind=item["type"],
        ref=ref,
        caption=caption[:CAPTION_LIMIT],
        filename=str(item.get("filename", ""))[:150],
    )


def media_send(rt: StepRuntime, text: str, buttons: tuple) -> None:
    """Append the step's media actions (the text as caption, the buttons attached)."""
    step = rt.step
    chat_id = rt.chat_id
    if step.get("location"):
        location = step["location"]
        rt.actions.append(
            SendLocation(
                chat_id=chat_id,
                latitude=float(location["latitude"]),
                longitude=float(location["longitude"]),
                title=rt.render(str(location.get("title", "")), escape=False)[:256],
                address=rt.render(str(location.get("address", "")), escape=False)[:256],
                buttons=() if text.strip() else buttons,
            )
        )
        if text.strip():
            rt.actions.append(SendMessage(chat_id=chat_id, text=text, buttons=buttons))
        return
    if step.get("album"):
        items = step["album"][:ALBUM_MAX]
        media = tuple(
            _medium(rt, item, text if index == 0 and not buttons else "")
            for index, item in enumerate(items)
        )
        rt.actions.append(SendMedia(chat_id=chat_id, media=media, buttons=buttons, text=text))
        return
    medium = _medium(rt, step["media"], text)
    rt.actions.append(SendMedia(chat_id=chat_id, media=(medium,), buttons=buttons))
