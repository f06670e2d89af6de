"""``manage.py runbot`` as a real subprocess against the Bot API double, while its
Redis is SIGKILLed and while its database connection is cut."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from django.db.models import Sum

from botplatform import cache as keys
from botplatform.models import TelegramUpdate
from devtools.telegram_double import TelegramDouble
from tests.botplatform.telegram.conftest import ECHO
from tests.botplatform.telegram.test_runbot import Runbot
from tests.factories import bot_create, project_create
from tests.resilience.servers import RedisServer, TcpProxy
from tests.resilience.test_conversation_and_state import ASK
from tests.workflows.conftest import publish
from users.models import BonusTransaction, BotUser

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ENGINE = "workflows.handler.handler"


@pytest.fixture
def double():
    server = TelegramDouble().start()
    yield server
    server.stop()


@pytest.fixture
def runner_factory(double, tmp_path):
    started: list[Runbot] = []

    def start(args: list[str], **env) -> Runbot:
        runner = Runbot(double, args, tmp_path, f"runbot-{len(started)}", **env).start()
        started.append(runner)
        return runner

    yield start
    for runner in started:
        runner.stop()


def test_runbot_keeps_answering_a_conversation_while_its_redis_is_killed(double, runner_factory):
    redis_server = RedisServer().start()
    try:
        project = project_create()
        bot = bot_create(project=project)
        double.bot_add(bot.token, bot.username)
        publish(project, ASK)
        runner = runner_factory(
            [str(bot.pk)],
            TEST_REDIS_URL=redis_server.url,
            TELEGRAM_EVENT_HANDLER=ENGINE,
            REDIS_BREAKER_SECONDS="1",
        )
        chat = 4242

        def answered(n: int) -> bool:
            return len(double.sent_texts(bot.token, chat)) >= n

        double.message(bot.token, chat, "/start")
        assert double.wait_for(lambda: answered(1), 30), runner.output()
        redis_server.kill()  # mid-conversation: the wait is cached only in Redis
        double.message(bot.token, chat, "Paris")
        assert double.wait_for(lambda: answered(2), 20), runner.output()
        time.sleep(3)  # longer than the lease TTL (2 s): the runner keeps its bot
        double.message(bot.token, chat, "/start")
        assert double.wait_for(lambda: answered(3), 20), runner.output()

        redis_server.start()  # empty, same port
        double.message(bot.token, chat, "Rome")
        assert double.wait_for(lambda: answered(4), 20), runner.output()
        raw = redis_server.client()
        assert double.wait_for(lambda: raw.exists(keys.telegram_lease_key(bot.pk)) == 1, 10)

        assert double.sent_texts(bot.token, chat) == [
            "Which city?",
            "Paris: 10 points",
            "Which city?",
            "Rome: 20 points",
        ]
        user = BotUser.objects.get(project=project, telegram_id=chat)
        ledger = BonusTransaction.objects.filter(user=user).aggregate(s=Sum("amount"))["s"]
        assert user.balance == ledger == 20
        assert set(TelegramUpdate.objects.values_list("status", flat=True)) == {"done"}
        switches = [line for line in runner.output().splitlines() if "botplatform.breaker" in line]
        assert len(switches) == 2, switches  # one line per switch, not per call
        assert "unreachable" in switches[0] and "answers again" in switches[1]
        log = runner.output()
        assert "lease lost" not in log
    finally:
        redis_server.stop()


def test_runbot_does_not_acknowledge_updates_while_its_database_is_cut(double, runner_factory):
    from django.conf import settings
    from django.db import connection

    db = settings.DATABASES["default"]
    proxy = TcpProxy(int(db["PORT"] or 5432), db["HOST"] or "127.0.0.1").start()
    try:
        bot = bot_create()
        double.bot_add(bot.token, bot.username)
        runner = runner_factory(
            [str(bot.pk)],
            TEST_DATABASE_URL=f"postgres://{db['USER']}@127.0.0.1:{proxy.port}/"
            f"{connection.settings_dict['NAME']}",
            TELEGRAM_EVENT_HANDLER=ECHO,
            TELEGRAM_BACKOFF_MAX="1",
        )
        double.message(bot.token, 1, "before")
        assert double.wait_for(lambda: double.sent_texts(bot.token) == ["echo:before"], 30), (
            runner.output()
        )

        # (A cut between Telegram accepting a reply and the journal recording it would
        # send that reply again: the documented exception, not what this test is about.)
        assert double.wait_for(lambda: TelegramUpdate.objects.filter(status="done").count(), 10)
        proxy.cut()  # every connection of the runner dropped, new ones refused
        for i in range(3):
            double.message(bot.token, 2, f"during {i}")
        assert double.wait_for(lambda: "could not record updates" in runner.output(), 20), (
            runner.output()
        )
        time.sleep(1.5)  # several getUpdates rounds with the database still down
        assert double.pending(bot.token) == 3  # not acknowledged: Telegram still holds them
        assert double.sent_texts(bot.token) == ["echo:before"]
        assert runner.proc.poll() is None  # backing off, not crashed

        proxy.restore()
        expected = ["echo:before"] + [f"echo:during {i}" for i in range(3)]
        assert double.wait_for(lambda: double.sent_texts(bot.token) == expected, 30), (
            runner.output()
        )
        assert double.wait_for(
            lambda: TelegramUpdate.objects.filter(status="done").count() == 4, 20
        ), runner.output()
        assert Counter(double.sent_texts(bot.token)) == Counter(expected)  # none twice
    finally:
        proxy.stop()


def test_runbot_started_while_redis_is_down_answers_and_takes_its_lease_later(
    double, runner_factory
):
    redis_server = RedisServer().start()
    redis_server.kill()  # down before the runner even starts
    try:
        bot = bot_create()
        double.bot_add(bot.token, bot.username)
        runner = runner_factory(
            [str(bot.pk)],
            TEST_REDIS_URL=redis_server.url,
            TELEGRAM_EVENT_HANDLER=ECHO,
            REDIS_BREAKER_SECONDS="1",
        )
        double.message(bot.token, 77, "first")
        assert double.wait_for(lambda: double.sent_texts(bot.token) == ["echo:first"], 30), (
            runner.output()
        )
        assert "polling without a lease" in runner.output()
        redis_server.start()
        raw = redis_server.client()
        assert double.wait_for(lambda: raw.exists(keys.telegram_lease_key(bot.pk)) == 1, 10), (
            runner.output()
        )
        double.message(bot.token, 77, "second")
        assert double.wait_for(
            lambda: double.sent_texts(bot.token) == ["echo:first", "echo:second"], 20
        ), runner.output()
        assert double.conflicts == 0
    finally:
        redis_server.stop()
