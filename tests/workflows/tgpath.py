"""Driving a workflow through the Telegram path: the Bot API double over real HTTP,
the update journal, dispatch, the engine, the real sender.

``Chat.say("/start")`` puts a message into the double, runs what ``runbot`` does with
one ``getUpdates`` answer, and returns the texts the bot sent to the chat meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from botplatform.models import Bot
from botplatform.telegram.client import api
from botplatform.telegram.dispatch import update_run
from botplatform.telegram.journal import updates_record
from devtools.telegram_double import TelegramDouble
from tests.factories import bot_create


@pytest.fixture
def double(settings):
    """The Bot API test double, with the platform pointed at it."""
    settings.TELEGRAM_CHAT_SEND_WINDOW_MS = 300
    settings.TELEGRAM_EVENT_HANDLER = "workflows.handler.handler"
    server = TelegramDouble().start()
    settings.TELEGRAM_API_URL = server.url
    yield server
    server.stop()


@pytest.fixture
def tg_bot(project, double) -> Bot:
    bot = bot_create(project=project, username="expr_bot")
    double.bot_add(bot.token, bot.username)
    project.bot_send_rate_per_second = 1000
    project.save(update_fields=["bot_send_rate_per_second"])
    return bot


@dataclass
class Chat:
    double: TelegramDouble
    bot: Bot
    chat_id: int
    offset: dict = field(default_factory=dict)

    def _seen(self) -> int:
        return len(self.double.sent_texts(self.bot.token, self.chat_id))

    def run(self) -> None:
        """What runbot does with one getUpdates answer, one update at a time."""
        updates = api().get_updates(self.bot.token, offset=self.offset.get("next"), limit=100)
        if not updates:
            return
        self.offset["next"] = max(u["update_id"] for u in updates) + 1
        for row in updates_record(bot_id=self.bot.pk, updates=updates):
            assert update_run(update_pk=row.pk) == "done"

    def say(self, text: str) -> list[str]:
        before = self._seen()
        self.double.message(self.bot.token, self.chat_id, text)
        self.run()
        return self.double.sent_texts(self.bot.token, self.chat_id)[before:]

    def press(self, label: str) -> list[str]:
        before = self._seen()
        self.double.press(self.bot.token, self.chat_id, label)
        self.run()
        return self.double.sent_texts(self.bot.token, self.chat_id)[before:]

    def since(self, before: int) -> list[str]:
        return self.double.sent_texts(self.bot.token, self.chat_id)[before:]


@pytest.fixture
def chat(double, tg_bot) -> Chat:
    return Chat(double=double, bot=tg_bot, chat_id=4242)
