"""The application's side of the Telegram transport: what an update does.

The transport (``botplatform/telegram/``) parses, records, claims and delivers; it
hands updates to the handler named by ``TELEGRAM_EVENT_HANDLER`` (by default
:data:`handler`, an :class:`EngineHandler`) and sends the actions that come back. The
interface it expects is :class:`botplatform.telegram.handler.UpdateHandler`.

Every update goes through a batch (:meth:`EngineHandler.batch`): the webhook and
``update_run`` open a batch of one, the polling fast path one per wave with
``ahead=True``. A batch of one reads nothing ahead and puts nothing off; a wave reads
its users, cached state and waiting executions ahead and puts off the writes that can
wait, so it costs a fixed handful of statements (``docs/performance.md``).

For each update :meth:`EngineHandler.handle` upserts the bot user (loyalty), clears
``is_blocked`` (they write again, so they unblocked the bot), applies a referral on
``/start ref_…``, does the till's part (:mod:`workflows.till_events`: a shared phone
linked, the cashier menu, a customer's answer on a redemption) and runs the engine. When Telegram says a chat blocked the bot, the
transport calls :meth:`EngineHandler.chat_blocked`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from django.db import connection

from botplatform import ratelimit
from botplatform.bulk import any_of
from botplatform.cache import workflow_waiting_key
from botplatform.conversation import Action
from botplatform.locks import sessions_lock_sql
from botplatform.models import Bot
from botplatform.rawmodels import models_from_sql
from botplatform.telegram.updates import ParsedUpdate
from users.botusers import bot_user_upsert, last_seen_writes
from users.customers import customer_joined
from users.invalidation import user_state_changed
from users.models import BotUser
from users.referrals import referral_apply
from users.selectors import user_states_prefetch
from workflows.cashier import cashier_state_keys
from workflows.engine.batch import Batch
from workflows.engine.deferred import deferred_writes
from workflows.engine.waiting import waiting_prefetch
from workflows.services import event_process, session_key_for_chat
from workflows.till_events import before_workflows, contact_link, contact_unhandled

logger = logging.getLogger(__name__)


class EngineBatch:
    """The updates of one transaction (a wave, or a single update) and what they share.

    The transport calls, in order: :meth:`lock_sql` (to join into its claim statement)
    and :meth:`locked`, :meth:`read_ahead` once the bot is loaded, :meth:`handle` per
    update, and :meth:`writes` (to join into its one write statement). Opened with
    ``ahead`` it carries the engine's :class:`workflows.engine.batch.Batch` (prepared
    by :meth:`locked` and :meth:`read_ahead`, finished by :meth:`writes`) and passes it
    explicitly to every update's handling. Without (``batch`` is None) the engine
    locks, reads and writes for itself.
    """

    def __init__(self, owner: EngineHandler, batch: Batch | None, keys: list[str]):
        self.owner = owner
        self.batch = batch
        self.session_keys = keys

    def lock_sql(self) -> tuple[str, list] | None:
        """A SELECT taking every conversation lock of the batch (until commit), or None."""
        if self.batch is None or not self.session_keys:
            return None
        return sessions_lock_sql(self.session_keys)

    def locked(self) -> None:
        """The transport ran :meth:`lock_sql`: the transaction holds those locks."""
        if self.batch is not None:
            self.batch.locked_sessions.update(self.session_keys)

    def read_ahead(
        self,
        *,
        bot: Bot,
        updates: Sequence[ParsedUpdate],
        joined: ratelimit.JoinedPlan | None = None,
    ) -> None:
        """Read the batch's users, their cached state and the waiting executions ahead:
        one statement, one Redis round trip, one statement."""
        if self.batch is None or not updates:
            return
        project_id = bot.project_id
        sessions = [_session_key(bot.pk, parsed) for parsed in updates]
        users = models_from_sql(
            BotUser,
            f"SELECT * FROM {connection.ops.quote_name(BotUser._meta.db_table)}"  # noqa: S608
            f" WHERE project_id = %s AND telegram_id = {any_of('bigint[]')}",
            [project_id, sorted({parsed.telegram_id for parsed in updates})],
        )
        ahead = self.batch.users
        for user in users:
            ahead.users[(project_id, user.telegram_id)] = user
        user_states_prefetch(
            ahead,
            users=[(user.pk, project_id) for user in ahead.users.values()],
            extra_keys=[
                *(workflow_waiting_key(key) for key in sessions),
                *cashier_state_keys(bot_id=bot.pk, updates=updates),
            ],
            joined=joined,
        )
        waiting_prefetch(self.batch, sessions)

    def handle(self, *, bot: Bot, parsed: ParsedUpdate) -> list[Action]:
        """The actions for one update of this batch."""
        return list(self.owner.handle(bot=bot, parsed=parsed, batch=self.batch))

    def writes(self) -> list[tuple[str, list]]:
        """The put-off writes as (sql, params), for the transport's one write statement."""
        if self.batch is None:
            return []
        return [*deferred_writes(self.batch), *last_seen_writes(self.batch.users)]


class EngineHandler:
    """The production handler: loyalty upsert, referral, unblocking, the engine."""

    @contextmanager
    def batch(
        self, *, bot_id: int, chats: Sequence[tuple[int, str, int | None]], ahead: bool = False
    ) -> Iterator[EngineBatch]:
        """A batch for the updates of ``chats`` ((chat_id, chat_type, sender_id) each).

        ``ahead`` (the polling fast path): the batch carries an engine
        :class:`~workflows.engine.batch.Batch`, passed explicitly down to the engine and
        the ledger. Without it (a batch of one: ``update_run``, the webhook) the engine
        locks, reads and writes for itself, as it does for timers and the simulator.
        """
        keys = [
            session_key_for_chat(
                bot_id=bot_id, chat_id=chat_id, chat_type=chat_type, telegram_id=sender
            )
            for chat_id, chat_type, sender in chats
        ]
        yield EngineBatch(self, Batch() if ahead else None, keys)

    def handle(self, *, bot: Bot, parsed: ParsedUpdate, batch: Batch | None = None) -> list[Action]:
        """Upsert the user, apply a referral, run the engine; the actions to send.
        ``batch``: the engine batch the update belongs to (its read-ahead), or None."""
        user, created = bot_user_upsert(
            project_id=bot.project_id,
            telegram_id=parsed.telegram_id,
            # The user's private chat (its id is the user's): a group is never stored as
            # theirs, so broadcasts and personal messages never land in a group.
            chat_id=parsed.chat_id if parsed.chat_type == "private" else parsed.telegram_id,
            username=parsed.username,
            first_name=parsed.first_name,
            last_name=parsed.last_name,
            language_code=parsed.language_code,
            ahead=batch.users if batch is not None else None,
        )
        if created and not user.is_test:
            customer_joined(user)
        if user.is_blocked:  # they write to us again, so they unblocked the bot
            BotUser.objects.filter(pk=user.pk).update(is_blocked=False)
            user.is_blocked = False
            user_state_changed(user_id=user.pk, project_id=user.project_id)
        event = parsed.event
        if (
            event.kind == "command"
            and event.command == "start"
            and event.payload.startswith("ref_")
        ):
            referral_apply(user=user, code=event.payload)
        if event.kind == "contact":
            user = contact_link(user=user, event=event)
        staff = before_workflows(
            bot=bot, user=user, parsed=parsed, ahead=batch.users if batch is not None else None
        )
        if staff is not None:
            return staff
        session_key = _session_key(bot.pk, parsed)
        result = event_process(
            user=user, event=event, bot=bot, session_key=session_key, batch=batch
        )
        if event.kind == "contact" and not result.handled:
            return contact_unhandled(user=user, parsed=parsed)
        return list(result.actions)

    def chat_blocked(self, *, bot: Bot, chat_id: int) -> None:
        """Telegram answered 403 for this chat: mark its users blocked (sends skip them)."""
        users = list(
            BotUser.objects.filter(project_id=bot.project_id, chat_id=chat_id, is_blocked=False)
        )
        BotUser.objects.filter(pk__in=[user.pk for user in users]).update(is_blocked=True)
        for user in users:
            user_state_changed(user_id=user.pk, project_id=user.project_id)
        logger.info("Bot %s: chat %s blocked the bot; sends to it are skipped", bot.pk, chat_id)

    def chat_is_blocked(self, *, bot: Bot, chat_id: int) -> bool:
        """Whether sends to this chat are skipped (a user there blocked the bot)."""
        return BotUser.objects.filter(
            project_id=bot.project_id, chat_id=chat_id, is_blocked=True
        ).exists()


def _session_key(bot_id: int, parsed: ParsedUpdate) -> str:
    return session_key_for_chat(
        bot_id=bot_id,
        chat_id=parsed.chat_id,
        chat_type=parsed.chat_type,
        telegram_id=parsed.telegram_id,
    )


# The default TELEGRAM_EVENT_HANDLER.
handler = EngineHandler()
