"""Turn a raw Telegram update into the engine's :class:`InputEvent`.

Parsing goes through pyTelegramBotAPI's types, so a structurally broken update is
rejected here with a clear reason instead of failing deep in a handler.
"""

from __future__ import annotations

from dataclasses import dataclass

from telebot import types

from workflows.engine.events import InputEvent

# What the platform handles; Telegram is asked not to send the rest.
ALLOWED_UPDATES = ["message", "callback_query"]


class MalformedUpdate(ValueError):
    """The update is not something Telegram would send; it is logged and skipped."""


class UnsupportedUpdate(ValueError):
    """A valid update of a kind the platform does not handle (edits, polls, ...)."""


@dataclass(frozen=True, slots=True)
class ParsedUpdate:
    update_id: int
    chat_id: int
    telegram_id: int
    username: str
    first_name: str
    last_name: str
    language_code: str
    event: InputEvent


def update_id_get(update: object) -> int | None:
    """The update_id if the payload has a usable one (needed to record it at all)."""
    if not isinstance(update, dict):
        return None
    value = update.get("update_id")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def update_chat_id(update: dict) -> int | None:
    """The chat an update belongs to, without full parsing (for ordering)."""
    message = update.get("message") or (update.get("callback_query") or {}).get("message")
    if isinstance(message, dict) and isinstance(message.get("chat"), dict):
        chat_id = message["chat"].get("id")
        return chat_id if isinstance(chat_id, int) else None
    sender = (update.get("callback_query") or {}).get("from")
    if isinstance(sender, dict) and isinstance(sender.get("id"), int):
        return sender["id"]
    return None


def update_sender_id(update: dict) -> int | None:
    """The Telegram user an update comes from, without full parsing."""
    for kind in ("message", "callback_query"):
        body = update.get(kind)
        if isinstance(body, dict) and isinstance(body.get("from"), dict):
            sender = body["from"].get("id")
            return sender if isinstance(sender, int) else None
    return None


def event_id_for(*, bot_id: int, update_id: int) -> str:
    """Stable across redeliveries, so engine operations are applied once."""
    return f"bot:{bot_id}:update:{update_id}"


def update_parse(*, bot_id: int, update: dict) -> ParsedUpdate:
    """Parse a message or callback query; raise Malformed/UnsupportedUpdate otherwise."""
    update_id = update_id_get(update)
    if update_id is None:
        raise MalformedUpdate("the update has no valid update_id")
    try:
        parsed = types.Update.de_json(update)
    except Exception as exc:
        raise MalformedUpdate(f"cannot parse the update: {type(exc).__name__}: {exc}") from exc
    event_id = event_id_for(bot_id=bot_id, update_id=update_id)

    try:
        if parsed.message is not None:
            message = parsed.message
            sender = message.from_user
            if sender is None:
                raise UnsupportedUpdate("a message without a sender (channel post)")
            text = message.text or ""
            if message.content_type != "text" or not text:
                raise UnsupportedUpdate(f"a {message.content_type} message")
            if text.startswith("/"):
                head, _, payload = text.partition(" ")
                command = head[1:].split("@", 1)[0].lower()
                event = InputEvent(
                    kind="command",
                    text=text,
                    command=command,
                    payload=payload.strip(),
                    message_id=message.message_id,
                    event_id=event_id,
                )
            else:
                event = InputEvent(
                    kind="text", text=text, message_id=message.message_id, event_id=event_id
                )
            chat_id = message.chat.id
        elif parsed.callback_query is not None:
            query = parsed.callback_query
            sender = query.from_user
            message = query.message
            chat_id = message.chat.id if message is not None else sender.id
            event = InputEvent(
                kind="callback",
                callback_data=query.data or "",
                callback_query_id=str(query.id),
                message_id=getattr(message, "message_id", None),
                event_id=event_id,
            )
        else:
            raise UnsupportedUpdate("neither a message nor a callback query")
    except (AttributeError, TypeError) as exc:
        raise MalformedUpdate(f"incomplete update: {exc}") from exc

    if not isinstance(sender.id, int) or not isinstance(chat_id, int):
        raise MalformedUpdate("the sender or chat has no numeric id")
    return ParsedUpdate(
        update_id=update_id,
        chat_id=chat_id,
        telegram_id=sender.id,
        username=sender.username or "",
        first_name=sender.first_name or "",
        last_name=sender.last_name or "",
        language_code=sender.language_code or "",
        event=event,
    )
