"""The engine's contract with every transport (Telegram, the simulator, tests).

A transport turns what happened into an :class:`InputEvent`, hands it to the engine,
and performs the returned actions. Nothing here knows about HTTP or Telegram types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# "level_up": the engine itself, after a bonus operation moved the user up a level.
EventKind = Literal["command", "text", "callback", "timer", "level_up"]


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


Action = SendMessage | EditMessage | AnswerCallback


@dataclass(slots=True)
class EngineResult:
    """What the engine decided for one event."""

    actions: list[Action] = field(default_factory=list)
    handled: bool = False  # False: no workflow matched and nothing was waiting
