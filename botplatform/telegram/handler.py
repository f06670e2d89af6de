"""The one interface between the Telegram transport and the application.

The transport parses, records, claims and delivers; what an update *does* is the
application's: the object named by ``settings.TELEGRAM_EVENT_HANDLER`` (by default
``workflows.handler.handler``), read through :func:`handler_get`. Every update goes
through a batch: ``update_run`` and the webhook open a batch of one, the polling fast
path (``batch.py``) one per wave (``ahead=True``), so there is one way into the
application.

The transport imports neither the engine nor the ledger: it only calls the methods
below. Tests swap the handler for their own (``tests/botplatform/telegram/handlers.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string

from botplatform import ratelimit
from botplatform.conversation import Action
from botplatform.models import Bot
from botplatform.telegram.updates import ParsedUpdate

# (chat_id, chat_type, sender telegram_id or None) of each update of a batch.
Chat = tuple[int, str, int | None]


class HandlerBatch(Protocol):
    """The updates of one transaction, as the application sees them."""

    def lock_sql(self) -> tuple[str, list] | None:
        """A SELECT taking the batch's conversation locks, for the claim statement."""

    def locked(self) -> None:
        """Called after the claim statement ran :meth:`lock_sql`."""

    def read_ahead(
        self,
        *,
        bot: Bot,
        updates: Sequence[ParsedUpdate],
        joined: ratelimit.JoinedPlan | None = None,
    ) -> None:
        """Read what the batch's updates will need, before any is handled. ``joined``:
        the batch's rate limits, to run in the same Redis call as the read (or none)."""

    def handle(self, *, bot: Bot, parsed: ParsedUpdate) -> list[Action]:
        """The actions for one update (inside the batch's transaction)."""

    def writes(self) -> list[tuple[str, list]]:
        """Put-off writes as (sql, params), joined into the batch's one write statement."""


class UpdateHandler(Protocol):
    def batch(
        self, *, bot_id: int, chats: Sequence[Chat], ahead: bool = False
    ) -> AbstractContextManager[HandlerBatch]:
        """A batch for updates of these chats, open for one transaction. ``ahead``: the
        caller runs ``lock_sql``, ``read_ahead`` and ``writes`` (the polling fast path);
        without it (a batch of one) those are no-ops and the handler works alone."""

    def chat_blocked(self, *, bot: Bot, chat_id: int) -> None:
        """Telegram answered 403 Forbidden for this chat: it blocked the bot."""

    def chat_is_blocked(self, *, bot: Bot, chat_id: int) -> bool:
        """Whether sends to this chat are to be skipped."""


def handler_get() -> UpdateHandler:
    """The configured handler (``settings.TELEGRAM_EVENT_HANDLER``)."""
    return import_string(settings.TELEGRAM_EVENT_HANDLER)
