"""What the engine decided for one event (engine-internal).

The vocabulary shared with transports (:class:`InputEvent`, the actions) lives in
:mod:`botplatform.conversation`; everything imports it from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from botplatform.conversation import Action


@dataclass(slots=True)
class EngineResult:
    """What the engine decided for one event."""

    actions: list[Action] = field(default_factory=list)
    handled: bool = False  # False: no workflow matched and nothing was waiting
