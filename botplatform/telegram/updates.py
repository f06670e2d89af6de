"""Turn a raw Telegram update into the engine's :class:`InputEvent`.

Parsing goes through pyTelegramBotAPI's types, so a structurally broken update is
rejected here with a clear reason instead of failing deep in a handler. What comes out
is checked again, whatever the payload held: ids are integers that fit in 64 bits, and
texts are strings without NUL or lone surrogates (the database refuses those; telebot
also reads a nested object given as a JSON *string*, which the journal's cleaning
cannot see into).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from telebot import types

from botplatform.conversation import InputEvent
from botplatform.telegram.journal_clean import INT64_MAX, INT64_MIN, text_clean, update_id_valid

# What the platform handles; Telegram is asked not to send the rest.
ALLOWED_UPDATES = ["message", "callback_query", "pre_checkout_query"]


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
    chat_type: str = "private"  # "group"/"supergroup": one session per member


def update_id_get(update: object) -> int | None:
    """The update_id if the payload has a usable one (needed to record it at all)."""
    if not isinstance(update, dict):
        return None
    value = update.get("update_id")
    return value if update_id_valid(value) else None


def _id(value: object) -> int | None:
    """A Telegram id: an integer (not a bool) that fits in a bigint column."""
    return value if type(value) is int and INT64_MIN <= value <= INT64_MAX else None


def _object(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def update_chat_id(update: object) -> int | None:
    """The chat an update belongs to, without full parsing (for ordering)."""
    update = _object(update)
    query = _object(update.get("callback_query"))
    message = update.get("message") or query.get("message")
    if isinstance(message, dict) and isinstance(message.get("chat"), dict):
        return _id(message["chat"].get("id"))
    query = query or _object(update.get("pre_checkout_query"))  # answered in the private chat
    return _id(_object(query.get("from")).get("id"))


def update_chat_type(update: object) -> str:
    """The chat's type ("private", "group", ...) without full parsing (for session locks)."""
    update = _object(update)
    message = update.get("message") or _object(update.get("callback_query")).get("message")
    kind = _object(_object(message).get("chat")).get("type")
    return kind if isinstance(kind, str) else "private"


def update_sender_id(update: object) -> int | None:
    """The Telegram user an update comes from, without full parsing."""
    update = _object(update)
    for kind in ("message", "callback_query", "pre_checkout_query"):
        body = update.get(kind)
        if isinstance(body, dict) and isinstance(body.get("from"), dict):
            return _id(body["from"].get("id"))
    return None


def update_callback_query_id(update: object) -> str | None:
    """A callback query's id, without full parsing (to answer the button of a skip)."""
    query_id = _object(_object(update).get("callback_query")).get("id")
    return query_id if isinstance(query_id, str) else None


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
    except Exception as exc:  # RecursionError too: it is an Exception
        raise MalformedUpdate(f"cannot parse the update: {_reason(exc)}") from exc
    event_id = event_id_for(bot_id=bot_id, update_id=update_id)

    try:
        if parsed.message is not None:
            message = parsed.message
            sender = message.from_user
            if sender is None:
                raise UnsupportedUpdate("a message without a sender (channel post)")
            text = _text(message.text, "text")
            if message.content_type == "contact":
                event = _contact_event(message, event_id)
            elif message.content_type == "successful_payment":
                event = _payment_event(message, event_id)
            elif message.content_type in _ATTACHMENTS:
                event = _attachment_event(message, event_id)
            elif message.content_type != "text" or not text:
                raise UnsupportedUpdate(f"a {message.content_type} message")
            elif text.startswith("/"):
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
            chat_id, chat_type = message.chat.id, message.chat.type
        elif parsed.callback_query is not None:
            query = parsed.callback_query
            sender = query.from_user
            message = query.message
            chat_id = message.chat.id if message is not None else sender.id
            chat_type = message.chat.type if message is not None else "private"
            if not isinstance(query.id, str) or not query.id:
                raise MalformedUpdate("a callback query without an id")
            event = InputEvent(
                kind="callback",
                callback_data=_text(query.data, "callback data"),
                callback_query_id=text_clean(query.id),
                message_id=getattr(message, "message_id", None),
                event_id=event_id,
            )
        elif parsed.pre_checkout_query is not None:
            query = parsed.pre_checkout_query
            sender = query.from_user
            chat_id, chat_type = sender.id, "private"
            if not isinstance(query.id, str) or not query.id:
                raise MalformedUpdate("a pre-checkout query without an id")
            event = InputEvent(
                kind="pre_checkout",
                pre_checkout_query_id=text_clean(query.id),
                invoice_payload=_text(query.invoice_payload, "invoice payload")[:128],
                currency=_text(query.currency, "currency")[:8],
                total_amount=_amount(query.total_amount),
                event_id=event_id,
            )
        else:
            raise UnsupportedUpdate("neither a message nor a callback query")
    except (AttributeError, TypeError) as exc:
        raise MalformedUpdate(f"incomplete update: {_reason(exc)}") from exc

    if _id(sender.id) is None or _id(chat_id) is None:
        raise MalformedUpdate("the sender or chat has no numeric id that fits in 64 bits")
    if event.message_id is not None and _id(event.message_id) is None:
        raise MalformedUpdate("the message_id is not a number that fits in 64 bits")
    return ParsedUpdate(
        update_id=update_id,
        chat_id=chat_id,
        telegram_id=sender.id,
        username=_text(sender.username, "username"),
        first_name=_text(sender.first_name, "first name"),
        last_name=_text(sender.last_name, "last name"),
        language_code=_text(sender.language_code, "language code"),
        event=event,
        chat_type=chat_type if isinstance(chat_type, str) else "private",
    )


PHONE_TEXT_LIMIT = 64  # a phone number, as Telegram writes it, is far shorter


def _contact_event(message: types.Message, event_id: str) -> InputEvent:
    """A shared contact. Whether it is the sender's own is the application's call: it
    compares ``contact_user_id`` with the sender, and ``forwarded`` says the message
    was forwarded from another chat (a forwarded contact keeps its owner's id)."""
    contact = message.contact
    phone = _text(getattr(contact, "phone_number", None), "phone number")
    if not phone:
        raise MalformedUpdate("a contact without a phone number")
    if len(phone) > PHONE_TEXT_LIMIT:
        raise MalformedUpdate("a contact's phone number is too long")
    user_id = getattr(contact, "user_id", None)
    if user_id is not None and _id(user_id) is None:
        raise MalformedUpdate("a contact's user_id is not a number that fits in 64 bits")
    forwarded = any(
        getattr(message, name, None) is not None
        for name in ("forward_origin", "forward_from", "forward_date", "forward_sender_name")
    )
    return InputEvent(
        kind="contact",
        contact_phone=phone,
        contact_user_id=user_id,
        forwarded=forwarded,
        message_id=message.message_id,
        event_id=event_id,
    )


_ATTACHMENTS = ("photo", "document", "location")


def _amount(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 10**12:
        raise MalformedUpdate("a payment amount that is not a positive whole number")
    return value


def _payment_event(message, event_id: str) -> InputEvent:
    """A successful payment (Telegram Payments, Stars included)."""
    payment = message.successful_payment
    charge_id = _text(payment.telegram_payment_charge_id, "charge id")
    if not charge_id or len(charge_id) > 255:
        raise MalformedUpdate("a payment without a valid charge id")
    return InputEvent(
        kind="payment",
        invoice_payload=_text(payment.invoice_payload, "invoice payload")[:128],
        currency=_text(payment.currency, "currency")[:8],
        total_amount=_amount(payment.total_amount),
        charge_id=charge_id,
        provider_charge_id=_text(payment.provider_payment_charge_id, "charge id")[:255],
        message_id=message.message_id,
        event_id=event_id,
    )


def _attachment_event(message, event_id: str) -> InputEvent:
    """A photo (its largest size), document or location the user sent."""
    caption = _text(message.caption, "caption")
    if message.content_type == "location":
        location = message.location
        latitude, longitude = location.latitude, location.longitude
        if (
            not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in (latitude, longitude)
            )
            or abs(latitude) > 90
            or abs(longitude) > 180
        ):
            raise MalformedUpdate("a location without valid coordinates")
        return InputEvent(
            kind="location", text=caption, latitude=float(latitude), longitude=float(longitude),
            message_id=message.message_id, event_id=event_id,
        )  # fmt: skip
    if message.content_type == "photo":
        sizes = message.photo or []
        if not sizes:
            raise MalformedUpdate("a photo without sizes")
        file, name = sizes[-1], ""
    else:
        file = message.document
        name = _text(getattr(file, "file_name", None), "file name")[:255]
    file_id = _text(getattr(file, "file_id", None), "file id")
    if not file_id or len(file_id) > 300:
        raise MalformedUpdate(f"a {message.content_type} without a valid file_id")
    return InputEvent(
        kind=message.content_type, text=caption, file_id=file_id, file_name=name,
        message_id=message.message_id, event_id=event_id,
    )  # fmt: skip


def _text(value: object, what: str) -> str:
    """A text field of the update, storable; "" when absent."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedUpdate(f"the {what} is not text")
    return text_clean(value)


def _reason(exc: BaseException) -> str:
    """An exception as a short, storable text (its message may quote the payload)."""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # str() of an absurd value (a 5,000-digit key) can raise
        text = type(exc).__name__
    return text_clean(text[:300])
