"""The demo conversation through the real engine and loyalty, driven via ``runbot``.

A user starts the bot, gets the welcome bonus, looks at the balance, spends 100
bonuses, tries again with too few, and types an answer, all through the Bot API
double and a runbot subprocess. It is then killed mid-conversation and restarted.
"""

from __future__ import annotations

import json
import signal

import pytest
from django.core.management import call_command

from botplatform.models import Bot, TelegramUpdate
from tests.botplatform.telegram.test_runbot import runbots  # noqa: F401  (fixture)
from users.models import BonusTransaction, BotUser

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

try:  # The engine lands in parallel; until it is merged there is nothing to drive.
    from workflows.services import event_process  # noqa: F401

    ENGINE = True
except ImportError:  # pragma: no cover
    ENGINE = False

TOKEN = "777000:AAH" + "d" * 32
CHAT = 424242


def _buttons(double, message_id: int) -> dict[str, str]:
    """Button text -> callback data of a message as the user sees it now."""
    message = double.messages[(CHAT, message_id)]
    markup = message.get("reply_markup") or {}
    return {
        button["text"]: button.get("callback_data", "")
        for row in markup.get("inline_keyboard", [])
        for button in row
    }


def _last_message(double) -> dict:
    mine = [m for (chat, _), m in double.messages.items() if chat == CHAT]
    return max(mine, key=lambda m: m["message_id"])


@pytest.mark.skipif(not ENGINE, reason="needs the workflow engine (issue 3)")
def test_demo_conversation_through_runbot(double, runbots):  # noqa: F811
    double.bot_add(TOKEN, "demo_bot")
    call_command("loaddemo", "--token", TOKEN)
    bot = Bot.objects.get(token=TOKEN)
    assert bot.username == "demo_bot"  # filled from getMe
    runner = runbots(["--all"], TELEGRAM_EVENT_HANDLER="workflows.handler.handler")

    def answered(count: int) -> bool:
        return TelegramUpdate.objects.filter(bot=bot, status="done").count() >= count

    # /start: the welcome bonus and the menu.
    double.command(TOKEN, CHAT, "/start")
    assert double.wait_for(lambda: answered(1), timeout=30), runner.output()
    menu = _last_message(double)
    assert "Welcome" in menu["text"] and "100" in menu["text"]
    buttons = _buttons(double, menu["message_id"])
    assert all(len(data.encode()) <= 64 for data in buttons.values())

    # Spend 100 bonuses: the menu message is edited in place, the button answered.
    spend = next(data for text, data in buttons.items() if "Spend" in text)
    double.callback(TOKEN, CHAT, spend, message_id=menu["message_id"])
    assert double.wait_for(lambda: answered(2), timeout=30), runner.output()
    assert "100 bonuses spent" in double.messages[(CHAT, menu["message_id"])]["text"]
    assert len(double.calls_of("answerCallbackQuery", TOKEN)) == 1
    user = BotUser.objects.get(project=bot.project, telegram_id=CHAT)
    assert user.balance == 0

    # Back to the menu, spend again: not enough.
    back = next(iter(_buttons(double, menu["message_id"]).values()))
    double.callback(TOKEN, CHAT, back, message_id=menu["message_id"])
    assert double.wait_for(lambda: answered(3), timeout=30), runner.output()
    spend = next(
        data for text, data in _buttons(double, menu["message_id"]).items() if "Spend" in text
    )
    double.callback(TOKEN, CHAT, spend, message_id=menu["message_id"])
    assert double.wait_for(lambda: answered(4), timeout=30), runner.output()
    assert "Not enough" in double.messages[(CHAT, menu["message_id"])]["text"]
    assert len(double.calls_of("answerCallbackQuery", TOKEN)) == 3

    # Kill the runner (no goodbye), restart; the conversation goes on, nothing doubled.
    runner.proc.kill()
    runner.wait()
    double.command(TOKEN, CHAT, "/start")
    again = runbots(
        ["demo_bot"],
        name="again",
        TELEGRAM_EVENT_HANDLER="workflows.handler.handler",
    )
    assert double.wait_for(lambda: answered(5), timeout=30), again.output()
    assert "Welcome" in _last_message(double)["text"]
    again.signal(signal.SIGTERM)
    assert again.wait() == 0

    ledger = list(
        BonusTransaction.objects.filter(user=user).order_by("pk").values_list("kind", "amount")
    )
    assert ledger == [("earn", 100), ("spend", -100)]
    assert set(TelegramUpdate.objects.filter(bot=bot).values_list("status", flat=True)) == {"done"}
    assert TOKEN not in runner.output() + again.output()
    assert json.dumps(double.calls_of("sendMessage", TOKEN)[0].params)  # recorded
