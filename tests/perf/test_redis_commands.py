"""What a message costs in Redis COMMANDS (the ones inside scripts included), counted
by a private redis-server's ``INFO commandstats``.

Round trips (tests/perf/test_cost_per_message.py) hide the work of a script: one
``EVALSHA`` may run five commands. Redis's own statistics count every command it
executed, whoever sent it, so each test here starts its own redis-server on a free
port, points the platform at it, and reads the figures before and after.
"""

from __future__ import annotations

import pytest

from botplatform import metrics
from botplatform.breaker import breakers_reset
from botplatform.env import cache_config
from botplatform.telegram.dispatch import update_run
from botplatform.telegram.journal import updates_record
from tests.resilience.servers import RedisServer

CHAT = 778001

# The bounds achieved (docs/performance.md, "Redis per message"); before this work:
# 13 commands a warm press, 121 a batch of ten, 13.7 a second for an idle runner.
# A warm press through update_run (recovered rows, the fallback): EVALSHA (+ MGET, SET
# of the user's key, SET of the bot's: the incoming limit and the reply's send slot) +
# the state MGET.
MAX_PRESS = 5
# A lone update through the batch path (a poll that returned one update, the webhook):
# one script for its limits, its reply's slot and its state read (EVALSHA, MGET), SET of
# the user's key and of the bot's.
MAX_WAVE_OF_ONE = 4
# A webhook request: the webhook's own per-bot limit (one script: EVALSHA, MGET, SET;
# django-ratelimit's fixed window was SET NX, EXISTS, INCRBY and EVAL, 3-4 round trips)
# and then a wave of one.
MAX_WEBHOOK = MAX_WAVE_OF_ONE + 3
# A batch: one script for every limit of the batch and its state read (EVALSHA, MGET),
# one SET per user, one for the bot.
BATCH = 10
MAX_BATCH = BATCH + 3
# An idle runner of 20 bots: "bots changed?" once a second (GET), its key and leases
# every TTL/3 (SET + MGET), the runners' count per discovery (ZADD, ZREMRANGEBYSCORE,
# ZCARD). Per bot before: a script (EVAL + GET + PEXPIRE) per renewal.
MAX_IDLE_PER_SECOND = 2.5


class CommandCounter:
    """The commands a private redis-server ran between ``reset()`` and ``count()``."""

    def __init__(self, server: RedisServer) -> None:
        self.client = server.client()

    def reset(self) -> None:
        self.client.config_resetstat()

    def calls(self) -> dict[str, int]:
        stats = self.client.info("commandstats")
        calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
        # Our own questions are not the platform's work.
        for own in ("info", "config|resetstat", "config"):
            calls.pop(own, None)
        return calls

    def count(self) -> int:
        return sum(self.calls().values())


@pytest.fixture
def commands(settings):
    server = RedisServer().start()
    breakers_reset()
    settings.CACHES = {"default": cache_config(server.url)}
    try:
        yield CommandCounter(server)
    finally:
        breakers_reset()
        server.stop()


def _press(double, bot, text: str, chat: int = CHAT) -> None:
    (row,) = updates_record(bot_id=bot.pk, updates=[double.press(bot.token, chat, text)])
    assert update_run(update_pk=row.pk) == "done"


@pytest.mark.django_db(transaction=True)
def test_a_warm_button_press_through_update_run_costs_at_most_five_redis_commands(
    demo_bot, double, commands, monkeypatch, settings
):
    settings.TELEGRAM_CHAT_SEND_WINDOW_MS = 1
    metrics.flush()
    monkeypatch.setattr(metrics, "_next_flush", float("inf"))
    (row,) = updates_record(
        bot_id=demo_bot.pk, updates=[double.command(demo_bot.token, CHAT, "/start")]
    )
    assert update_run(update_pk=row.pk) == "done"
    _press(double, demo_bot, "Balance")
    _press(double, demo_bot, "Back")

    commands.reset()
    _press(double, demo_bot, "Balance")
    calls = commands.calls()
    assert "Your balance" in double.messages[(CHAT, double.last_message[CHAT])]["text"]
    assert sum(calls.values()) <= MAX_PRESS, calls
    assert "time" not in calls and "expire" not in calls, calls  # caller's clock, fixed TTLs


@pytest.mark.django_db(transaction=True)
def test_a_warm_lone_update_of_a_poll_costs_at_most_four_redis_commands(
    demo_bot, double, commands, monkeypatch, settings
):
    from botplatform.telegram.batch import updates_run_batch

    settings.TELEGRAM_CHAT_SEND_WINDOW_MS = 1
    metrics.flush()
    monkeypatch.setattr(metrics, "_next_flush", float("inf"))

    def run(update) -> None:
        rows = updates_record(bot_id=demo_bot.pk, updates=[update])
        result = updates_run_batch(bot_id=demo_bot.pk, rows=rows)
        assert result.leftovers == [] and result.handled == 1

    run(double.command(demo_bot.token, CHAT, "/start"))
    for text in ("Balance", "Back"):
        run(double.press(demo_bot.token, CHAT, text))

    commands.reset()
    run(double.press(demo_bot.token, CHAT, "Balance"))
    calls = commands.calls()
    assert "Your balance" in double.messages[(CHAT, double.last_message[CHAT])]["text"]
    assert sum(calls.values()) <= MAX_WAVE_OF_ONE, calls
    assert calls.get("evalsha") == 1 and calls.get("mget") == 1, calls


@pytest.mark.django_db(transaction=True)
def test_a_warm_webhook_request_costs_its_limit_script_and_a_wave_of_one(
    client, demo_bot, double, commands, monkeypatch, settings
):
    import json

    from django.urls import reverse

    settings.TELEGRAM_CHAT_SEND_WINDOW_MS = 1
    metrics.flush()
    monkeypatch.setattr(metrics, "_next_flush", float("inf"))
    url = reverse("telegram_webhook", kwargs={"bot_id": demo_bot.pk})

    def post(update: dict) -> None:
        response = client.post(
            url,
            data=json.dumps(update),
            content_type="application/json",
            HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN=demo_bot.webhook_secret,
        )
        assert response.status_code == 200

    post(double.command(demo_bot.token, CHAT, "/start"))
    for text in ("Balance", "Back"):
        post(double.press(demo_bot.token, CHAT, text))

    commands.reset()
    post(double.press(demo_bot.token, CHAT, "Balance"))
    calls = commands.calls()
    assert "Your balance" in double.messages[(CHAT, double.last_message[CHAT])]["text"]
    assert sum(calls.values()) <= MAX_WEBHOOK, calls
    assert calls.get("evalsha") == 2 and "incrby" not in calls, calls


@pytest.mark.django_db(transaction=True)
def test_a_warm_batch_of_ten_costs_about_one_redis_command_per_message(
    demo_bot, double, commands, monkeypatch, settings
):
    from botplatform.telegram.batch import updates_run_batch

    settings.TELEGRAM_CHAT_SEND_WINDOW_MS = 1
    demo_bot.project.bot_send_rate_per_second = 1000
    demo_bot.project.save(update_fields=["bot_send_rate_per_second"])
    metrics.flush()
    monkeypatch.setattr(metrics, "_next_flush", float("inf"))
    chats = [CHAT + i for i in range(BATCH)]

    def run(updates: list) -> None:
        rows = updates_record(bot_id=demo_bot.pk, updates=updates)
        result = updates_run_batch(bot_id=demo_bot.pk, rows=rows)
        assert result.leftovers == [] and result.handled == BATCH

    run([double.command(demo_bot.token, chat, "/start") for chat in chats])
    for text in ("Balance", "Back"):
        run([double.press(demo_bot.token, chat, text) for chat in chats])

    commands.reset()
    run([double.press(demo_bot.token, chat, "Balance") for chat in chats])
    calls = commands.calls()
    for chat in chats:
        assert "Your balance" in double.messages[(chat, double.last_message[chat])]["text"]
    assert sum(calls.values()) <= MAX_BATCH, calls
    assert calls.get("evalsha") == 1 and calls.get("mget") == 1, calls


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_idle_runner_of_twenty_bots_costs_a_few_redis_commands_a_second(
    double, commands, tmp_path
):
    import time

    from tests.botplatform.telegram.test_runbot import Runbot
    from tests.factories import bot_create, project_create

    project = project_create()
    for _ in range(20):
        bot = bot_create(project=project)
        double.bot_add(bot.token, bot.username)
    runner = Runbot(
        double,
        ["--all"],
        tmp_path,
        TEST_REDIS_URL=f"redis://127.0.0.1:{commands.client.connection_pool.connection_kwargs['port']}/0",
        TELEGRAM_LEASE_TTL="15",
        TELEGRAM_DISCOVERY_INTERVAL="10",
        TELEGRAM_POLL_TIMEOUT="1",
    ).start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(commands.client.keys("telegram:lease:*")) < 20:
            time.sleep(0.2)
        assert len(commands.client.keys("telegram:lease:*")) == 20, runner.output()
        time.sleep(2)
        commands.reset()
        time.sleep(20)
        calls = commands.calls()
    finally:
        runner.stop()
    rate = sum(calls.values()) / 20
    assert rate <= MAX_IDLE_PER_SECOND, calls
    assert "eval" not in calls and "pexpire" not in calls, calls  # no script per bot
