"""Test handlers standing in for the engine (TELEGRAM_EVENT_HANDLER) in transport tests.

They have real, transactional side effects (a BotUser and a counter variable), so a
test can tell "handled once" from "handled twice" in the database, and they answer
with text that names the update, so a test can tell which replies went out.
"""

from __future__ import annotations

import os
import time

from django.core.cache import cache

from botplatform.conversation import AnswerCallback, Button, SendMessage
from botplatform.models import Bot
from botplatform.telegram.updates import ParsedUpdate
from users.models import BotUser, UserVariable
from workflows.handler import EngineHandler


class TestHandler(EngineHandler):
    """The application's handler (its batches, its blocked-chat bookkeeping) with the
    per-update decision replaced by a test function; callable like that function."""

    def __init__(self, decide):
        self.decide = decide

    def handle(self, *, bot: Bot, parsed: ParsedUpdate, batch=None) -> list:
        return self.decide(bot=bot, parsed=parsed)

    __call__ = handle
    __test__ = False  # not a pytest class


def _count(bot: Bot, parsed: ParsedUpdate) -> int:
    user, _ = BotUser.objects.get_or_create(
        project_id=bot.project_id,
        telegram_id=parsed.telegram_id,
        defaults={"chat_id": parsed.chat_id, "first_name": parsed.first_name},
    )
    variable, _created = UserVariable.objects.get_or_create(
        user=user, key="handled", defaults={"value": 0}
    )
    variable = UserVariable.objects.select_for_update().get(pk=variable.pk)
    variable.value = int(variable.value) + 1
    variable.save(update_fields=["value"])
    return variable.value


@TestHandler
def echo_handle(*, bot: Bot, parsed: ParsedUpdate) -> list:
    """Echo texts and commands; answer callbacks with an alert. "slow" texts take a while."""
    event = parsed.event
    _count(bot, parsed)
    if "slow" in event.text:
        # Tell the test when this chat's worker is inside a handler (mid-transaction).
        marker = f"test:in_handler:{parsed.chat_id}"
        cache.set(marker, time.time(), 30)
        time.sleep(float(os.environ.get("TEST_SLOW_SECONDS", "0.3")))
        cache.delete(marker)
    if "boom" in event.text:
        raise RuntimeError("the handler exploded")
    if "twice" in event.text:  # two replies: delivery progress between them
        return [
            SendMessage(chat_id=parsed.chat_id, text=f"echo1:{event.text}"),
            SendMessage(chat_id=parsed.chat_id, text=f"echo2:{event.text}"),
        ]
    if event.kind == "callback":
        return [
            AnswerCallback(callback_query_id=event.callback_query_id, text="ok"),
            SendMessage(chat_id=parsed.chat_id, text=f"pressed:{event.callback_data}"),
        ]
    if event.kind == "command":
        return [
            SendMessage(
                chat_id=parsed.chat_id,
                text=f"cmd:{event.command}:{event.payload}",
                buttons=((Button(text="Go", callback_data="go"),),),
            )
        ]
    return [SendMessage(chat_id=parsed.chat_id, text=f"echo:{event.text}")]


@TestHandler
def silent_handle(*, bot: Bot, parsed: ParsedUpdate) -> list:
    """Counts, answers nothing (the transport must still answer callback queries)."""
    _count(bot, parsed)
    return []


@TestHandler
def noop_handle(*, bot: Bot, parsed: ParsedUpdate) -> list:
    """No database work of its own: what remains is the transport's cost."""
    return [SendMessage(chat_id=parsed.chat_id, text="hi")]
