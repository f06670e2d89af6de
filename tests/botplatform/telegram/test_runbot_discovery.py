"""A running ``runbot --all`` follows the admin: new, re-activated and deactivated bots.

The discovery interval is set far beyond the test (600 s), so only the "bots changed"
signal a save sends can make the runner notice in time.
"""

from __future__ import annotations

import signal
import time

import pytest

from botplatform.models import Bot
from tests.botplatform.telegram.test_runbot import runbots  # noqa: F401
from tests.factories import bot_create, project_create

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PICKUP_SECONDS = 8  # the signal is read every second; the rest is a busy machine


def _started(runner) -> bool:
    return "started" in runner.output()


def _echoed(double, bot, chat_id: int, text: str) -> bool:
    return f"echo:{text}" in double.sent_texts(bot.token, chat_id)


def test_a_bot_added_in_the_admin_is_polled_within_seconds(double, runbots):  # noqa: F811
    project = project_create()
    runner = runbots(["--all"], TELEGRAM_DISCOVERY_INTERVAL="600", TELEGRAM_LEASE_TTL="6")
    assert double.wait_for(lambda: _started(runner), timeout=30), runner.output()
    time.sleep(1.5)  # past the first discovery, which found nothing

    bot = bot_create(project=project)  # a save, as the admin's form does
    double.bot_add(bot.token, bot.username)
    double.message(bot.token, 4001, "hello")
    added = time.monotonic()
    assert double.wait_for(lambda: _echoed(double, bot, 4001, "hello"), PICKUP_SECONDS), (
        runner.output()
    )
    assert time.monotonic() - added < PICKUP_SECONDS

    # Deactivated: the runner lets it go (no restart), so getUpdates stops.
    bot.is_active = False
    bot.save(update_fields=["is_active", "updated_at"])
    assert double.wait_for(
        lambda: "no longer active for polling" in runner.output(), PICKUP_SECONDS
    ), runner.output()
    time.sleep(2)  # the last long poll (1 s) ends
    polls = len(double.calls_of("getUpdates", bot.token))
    time.sleep(2)
    assert len(double.calls_of("getUpdates", bot.token)) == polls

    # Re-activated: picked up again and answering.
    bot.is_active = True
    bot.save(update_fields=["is_active", "updated_at"])
    double.message(bot.token, 4001, "again")
    assert double.wait_for(lambda: _echoed(double, bot, 4001, "again"), PICKUP_SECONDS), (
        runner.output()
    )
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0, runner.output()


def test_a_replaced_token_restarts_the_poller_with_the_new_token(double, runbots):  # noqa: F811
    bot = bot_create()
    double.bot_add(bot.token, bot.username)
    runner = runbots(["--all"], TELEGRAM_DISCOVERY_INTERVAL="600", TELEGRAM_LEASE_TTL="6")
    double.message(bot.token, 4002, "one")
    assert double.wait_for(lambda: _echoed(double, bot, 4002, "one"), 30), runner.output()

    new_token = f"{bot.telegram_id}:AAHreplacedreplacedreplaced0001"
    double.bot_add(new_token, bot.username)
    bot.token = new_token
    bot.save()
    double.message(new_token, 4002, "two")
    assert double.wait_for(
        lambda: "echo:two" in double.sent_texts(new_token, 4002), PICKUP_SECONDS * 2
    ), runner.output()
    assert Bot.objects.get(pk=bot.pk).status != Bot.Status.UNAUTHORIZED
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0, runner.output()


def test_a_key_rotation_restarts_no_poller(double, runbots, settings):  # noqa: F811
    from cryptography.fernet import Fernet

    from botplatform.bots import tokens_reencrypt

    bot = bot_create()
    double.bot_add(bot.token, bot.username)
    keys = [Fernet.generate_key().decode(), *settings.BOT_TOKEN_KEYS]
    runner = runbots(
        ["--all"],
        TELEGRAM_DISCOVERY_INTERVAL="600",
        TELEGRAM_LEASE_TTL="6",
        BOT_TOKEN_KEYS=",".join(keys),
    )
    double.message(bot.token, 4003, "before")
    assert double.wait_for(lambda: _echoed(double, bot, 4003, "before"), 30), runner.output()

    settings.BOT_TOKEN_KEYS = keys
    assert tokens_reencrypt() == 1  # every stored hash and ciphertext changes; saves bump
    double.message(bot.token, 4003, "after")
    assert double.wait_for(lambda: _echoed(double, bot, 4003, "after"), PICKUP_SECONDS), (
        runner.output()
    )
    time.sleep(2)  # a rediscovery after the bump has run
    assert "has a new token" not in runner.output()
    assert runner.output().count("lease acquired") == 1
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0, runner.output()
