from __future__ import annotations

import pytest

from devtools.telegram_double import TelegramDouble


@pytest.fixture
def double(settings):
    """The Bot API double, with the platform pointed at it."""
    server = TelegramDouble().start()
    settings.TELEGRAM_API_URL = server.url
    settings.TELEGRAM_CHAT_SEND_WINDOW_MS = 300
    yield server
    server.stop()


@pytest.fixture
def demo_bot(db, double):
    """The demo project (loaddemo) with one bot known to the double."""
    from tests.factories import bot_create
    from workflows.management.commands.loaddemo import demo_load

    project, _ = demo_load()
    bot = bot_create(project=project)
    double.bot_add(bot.token, bot.username)
    return bot
