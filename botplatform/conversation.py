"""The words transport and application share: what came in, what to send back.

A transport (Telegram, the simulator, tests) turns what happened into an
:class:`InputEvent`; the application (the workflows handler and the engine) answers
with actions (:class:`SendMessage`, :class:`EditMessage`, :class:`AnswerCallback`),
which the transport performs. Actions are stored as JSON between the two (the update
journal's outbox, deferred sends): :func:`actions_to_json` / :func:`actions_from_json`.

This module imports neither side, so both can import it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

# "level_up": the engine itself, after a bonus operation moved the user up a level.
# "event": an API event (POST /api/v1/customers/{id}/events): ``payload`` is its name,
# ``text`` its JSON payload.
# "contact": the user shared a contact (the "share my phone" button sends their own).
EventKind = Literal["command", "text", "callback", "timer", "level_up", "event", "contact"]


@dataclass(frozen=True, slots=True)
class InputEvent:
    kind: EventKind
    text: str = ""
    command: str = ""  # without the slash and bot name: "start"
    payload: str = ""  # what follows the command, e.g. a deep-link "ref_ab12"
    callback_data: str = ""
    callback_query_id: str = ""
    message_id: int | None = None  # the message a button was pressed on
    # Unique per delivered event (e.g. "bot:42:update:1001"); retries reuse it, so
    # operations it triggers (a bonus spend) are applied once.
    event_id: str = ""
    # A shared contact: its phone as Telegram gave it and the Telegram user it belongs
    # to (None for an address-book entry of someone not on Telegram). The sender's own
    # phone has ``contact_user_id`` equal to the sender's id and is not ``forwarded``.
    contact_phone: str = ""
    contact_user_id: int | None = None
    forwarded: bool = False


@dataclass(frozen=True, slots=True)
class Button:
    text: str
    callback_data: str = ""
    url: str = ""


@dataclass(frozen=True, slots=True)
class SendMessage:
    chat_id: int
    text: str
    parse_mode: str = "HTML"
    buttons: tuple[tuple[Button, ...], ...] = ()  # inline keyboard rows
    reply_keyboard: tuple[tuple[str, ...], ...] = ()
    remove_reply_keyboard: bool = False
    # The label of a "share my phone" reply-keyboard button (Telegram's
    # ``request_contact``), shown as the keyboard's first row; "" for none.
    contact_button: str = ""


@dataclass(frozen=True, slots=True)
class SendPhoto:
    """A picture with a caption. ``photo`` is a Telegram file id (or an https URL) to
    send again; otherwise ``upload`` holds the image itself (PNG, base64). After an
    upload the transport remembers the file id Telegram gave it under ``cache_as``
    (per bot, ``botplatform.cache.photo_file_id_key``), so the next send of the same
    image reuses it instead of uploading again."""

    chat_id: int
    caption: str = ""
    photo: str = ""
    upload: str = ""
    cache_as: str = ""
    parse_mode: str = "HTML"
    buttons: tuple[tuple[Button, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class EditMessage:
    chat_id: int
    message_id: int
    text: str
    parse_mode: str = "HTML"
    buttons: tuple[tuple[Button, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class AnswerCallback:
    callback_query_id: str
    text: str = ""
    show_alert: bool = False


Action = SendMessage | EditMessage | AnswerCallback | SendPhoto


def actions_to_json(actions: Iterable[Action]) -> list[dict]:
    """Actions as JSON-ready dicts ({"type": "SendMessage", ...fields})."""
    return [{"type": type(action).__name__, **asdict(action)} for action in actions]


def actions_from_json(data: list[dict]) -> list[Action]:
    """The inverse of :func:`actions_to_json`."""
    result: list[Action] = []
    for item in data:
        fields = dict(item)
        kind = fields.pop("type")
        if "buttons" in fields:
            fields["buttons"] = tuple(
                tuple(Button(**button) for button in row) for row in fields["buttons"]
            )
        if "reply_keyboard" in fields:
            fields["reply_keyboard"] = tuple(tuple(row) for row in fields["reply_keyboard"])
        cls = {
            "SendMessage": SendMessage,
            "EditMessage": EditMessage,
            "SendPhoto": SendPhoto,
        }.get(kind, AnswerCallback)
        result.append(cls(**fields))
    return result
