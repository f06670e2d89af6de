"""Where actions made outside a Telegram update go: delays, HTTP results, timeouts,
broadcasts.

One function is registered at start-up, explicitly, by the workflows app
(``workflows/apps.py``: ``WorkflowsConfig.ready``): the simulator's router
(:func:`workflows.simulator.simulator_routed`) in front of the Telegram transport's
``botplatform.telegram.sender.actions_deliver``. Services and broadcasts call
:func:`actions_deliver`; tests register a recorder instead (the ``delivery_to``
fixture in ``tests/conftest.py``) and the previous function is restored after.
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import ImproperlyConfigured

from botplatform.conversation import Action

# (*, bot_id: int | None, chat_id: int, actions: list[Action]) -> list[(chat, message id)]
Deliver = Callable[..., list[tuple[int, int]] | None]

_deliver: Deliver | None = None


def delivery_register(deliver: Deliver) -> Deliver | None:
    """Make ``deliver`` the destination of every action made outside an update;
    returns the one registered before (for tests to restore)."""
    global _deliver
    previous, _deliver = _deliver, deliver
    return previous


def actions_deliver(
    *, bot_id: int | None, chat_id: int, actions: list[Action]
) -> list[tuple[int, int]]:
    """Send ``actions`` to ``chat_id`` through the registered destination; returns
    (chat id, message id) of the messages it sent (empty when it tells none: the
    simulator, a test recorder)."""
    if not actions:
        return []
    if _deliver is None:
        raise ImproperlyConfigured("No action delivery registered (workflows/apps.py does it).")
    return list(_deliver(bot_id=bot_id, chat_id=chat_id, actions=actions) or [])
