"""The words transport and application share: what came in, what to send back.

A transport (Telegram, the simulator, tests) turns what happened into an
:class:`InputEvent`; the application (the workflows handler and the engine) answers
with actions (:class:`SendMessage`, :class:`EditMessage`, :class:`AnswerCallback`,
:class:`SendMedia` for photos, documents, ... and albums, :class:`SendLocation`),
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
# "photo", "document", "location": the user sent one (an ``input`` step may take it).
# "pre_checkout": Telegram asks whether a payment may go ahead (answer within 10 s);
# "payment": a successful payment of an invoice.
EventKind = Literal[
    "command",
    "text",
    "callback",
    "timer",
    "level_up",
    "event",
    "contact",
    "photo",
    "document",
    "location",
    "pre_checkout",
    "payment",
]
# Events an ``input`` step may take as the answer.
ANSWER_KINDS = frozenset({"text", "command", "contact", "photo", "document", "location"})


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
    # A photo or document the user sent: Telegram's file_id (for this bot) and name.
    file_id: str = ""
    file_name: str = ""
    latitude: float | None = None  # a location the user sent
    longitude: float | None = None
    # Payments: the invoice's payload, the price (in the currency's smallest unit;
    # Stars for XTR), and for "payment" Telegram's charge id (refunds use it).
    invoice_payload: str = ""
    currency: str = ""
    total_amount: int = 0
    charge_id: str = ""
    provider_charge_id: str = ""
    pre_checkout_query_id: str = ""


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


# What a media message can carry; "album" is not a kind (several media in one SendMedia).
MEDIA_KINDS = ("photo", "document", "video", "animation", "audio", "voice", "sticker")
# Kinds Telegram takes in an album (sendMediaGroup).
ALBUM_KINDS = ("photo", "video", "document", "audio")


@dataclass(frozen=True, slots=True)
class Media:
    """One file to send. ``ref`` says where it is:

    - ``stored:<id>``: a file uploaded in the admin (``botplatform.models.MediaFile``);
      the transport uploads it once per bot, then sends Telegram's ``file_id``;
    - ``https://...``: a URL Telegram fetches itself;
    - ``data:<content type>;base64,<bytes>``: bytes made on the spot (a card's QR
      code), keep them small: they travel in the outbox's JSON. Without
      ``cache_name`` they are uploaded each time; with it, once per bot: the
      transport keeps Telegram's ``file_id`` under that name and sends the id after;
    - anything else: a Telegram ``file_id`` (e.g. a photo a user sent).

    ``cache_name`` must name the bytes themselves (``card:<code>``): other bytes under
    the same name would never be uploaded.
    """

    kind: str  # one of MEDIA_KINDS
    ref: str
    caption: str = ""  # HTML, at most 1024 characters
    filename: str = ""  # the name a document is shown with
    cache_name: str = ""  # for data: bytes, upload once per bot (see above)


@dataclass(frozen=True, slots=True)
class SendMedia:
    """A photo, document, video, ... (one ``media``) or an album (several).

    Buttons go with a single medium (Telegram has none on albums: the transport sends
    them in a message after the album, with ``text`` or a neutral text).
    """

    chat_id: int
    media: tuple[Media, ...]
    parse_mode: str = "HTML"
    buttons: tuple[tuple[Button, ...], ...] = ()
    text: str = ""  # for an album with buttons: the message carrying them


@dataclass(frozen=True, slots=True)
class SendLocation:
    """A point on the map; with ``title`` and ``address`` a venue."""

    chat_id: int
    latitude: float
    longitude: float
    title: str = ""
    address: str = ""
    buttons: tuple[tuple[Button, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class SendInvoice:
    """An invoice (Telegram Payments). ``currency`` "XTR" is Telegram Stars (no
    provider token); ``amount`` is in the currency's smallest unit (Stars for XTR)."""

    chat_id: int
    title: str
    description: str
    payload: str  # comes back in the pre-checkout query and the payment
    currency: str
    amount: int
    label: str = ""


@dataclass(frozen=True, slots=True)
class AnswerPreCheckout:
    """The answer to a pre-checkout query: go ahead, or why not."""

    pre_checkout_query_id: str
    ok: bool
    error_message: str = ""


Action = (
    SendMessage
    | EditMessage
    | AnswerCallback
    | SendMedia
    | SendLocation
    | SendInvoice
    | AnswerPreCheckout
)
_ACTION_TYPES = {
    cls.__name__: cls
    for cls in (
        SendMessage,
        EditMessage,
        AnswerCallback,
        SendMedia,
        SendLocation,
        SendInvoice,
        AnswerPreCheckout,
    )
}


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
        if "media" in fields:
            fields["media"] = tuple(Media(**medium) for medium in fields["media"])
        cls = _ACTION_TYPES.get(kind, AnswerCallback)
        result.append(cls(**fields))
    return result
