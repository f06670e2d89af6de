"""A bot's status: a 401 about an old token never lands on its replacement."""

from __future__ import annotations

import pytest

from botplatform.models import Bot
from botplatform.telegram.botstatus import bot_mark_unauthorized
from tests.factories import bot_create

pytestmark = pytest.mark.django_db

OLD = "123456789:AAHoldoldoldoldoldoldoldoldoldold01"
NEW = "123456789:AAHnewnewnewnewnewnewnewnewnewnew02"


def test_a_401_marks_the_bot_that_still_has_that_token():
    bot = bot_create(token=OLD)
    bot_mark_unauthorized(bot=bot, description="Unauthorized")
    bot.refresh_from_db()
    assert bot.status == Bot.Status.UNAUTHORIZED
    assert OLD not in bot.status_message and "…" in bot.status_message


def test_a_late_401_for_a_replaced_token_leaves_the_new_token_alone():
    poller_copy = bot_create(token=OLD)
    fresh = Bot.objects.get(pk=poller_copy.pk)
    fresh.token = NEW
    fresh.save()
    bot_mark_unauthorized(bot=poller_copy, description="Unauthorized")
    fresh.refresh_from_db()
    assert fresh.status == Bot.Status.NEW
    assert fresh.status_message == ""
