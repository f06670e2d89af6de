"""What the engine decided for one event (engine-internal).

The vocabulary shared with transports (:class:`InputEvent`, the actions) lives in
:mod:`botplatform.conversation`; it is re-exported here for the step modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from botplatform.conversation import (  # noqa: F401 (re-exported for the steps)
    Action,
    AnswerCallback,
    Button,
    EditMessage,
    EventKind,
    InputEvent,
    SendMessage,
    SendPhoto,
)


@dataclass(slots=True)
class EngineResult:
    """What the engine decided for one event."""

    actions: list[Action] = field(default_factory=list)
    handled: bool = False  # False: no workflow matched and nothing was waiting
