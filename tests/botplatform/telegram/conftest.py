from __future__ import annotations

import pytest

from devtools.telegram_double import TelegramDouble
from tests.factories import bot_create

ECHO = "tests.botplatform.telegram.handlers.echo_handle"
SILENT = "tests.botplatform.telegram.handlers.silent_handle"


@pytest.fixture(autouse=True)
def _fast_chat_rate(settings):
    """Keep the per-chat send rate's shape (a window) but shorter, for speed."""
    settings.TELEGRAM_CHAT_SEND_WINDOW_MS = 300


@pytest.fixture
def double(settings):
    """The Bot API test double, with the platform pointed at it."""
    server = TelegramDouble().start()
    settings.TELEGRAM_API_URL = server.url
    yield server
    server.stop()


@pytest.fixture
def echo_handler(settings):
    settings.TELEGRAM_EVENT_HANDLER = ECHO


@pytest.fixture
def tg_bot(db, double):
    """A bot known to the platform and to the double."""
    bot = bot_create()
    double.bot_add(bot.token, bot.username)
    return bot
