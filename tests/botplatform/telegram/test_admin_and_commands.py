from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from botplatform.models import Bot
from tests.factories import bot_create


@pytest.mark.django_db
def test_a_new_token_resets_an_unauthorized_bot(client, double):
    bot = bot_create(status=Bot.Status.UNAUTHORIZED, status_message="401")
    Bot.objects.filter(pk=bot.pk).update(
        status=Bot.Status.UNAUTHORIZED, status_message="Telegram rejected the token"
    )
    client.force_login(get_user_model().objects.create_superuser("a", "a@example.com", "pw"))
    new_token = "424242:AAH" + "n" * 32
    double.bot_add(new_token, "renewed_bot")
    response = client.post(
        reverse("admin:botplatform_bot_change", args=[bot.pk]),
        {
            "project": bot.project_id,
            "username": bot.username,
            "new_token": new_token,
            "mode": Bot.Mode.POLLING,
            "is_active": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    bot.refresh_from_db()
    assert bot.token == new_token
    assert bot.username == "renewed_bot"
    assert bot.status == Bot.Status.NEW
    assert bot.status_message == ""


@pytest.mark.django_db
def test_runbot_refuses_unknown_or_inactive_bots_and_ambiguous_arguments():
    with pytest.raises(CommandError, match="No bot"):
        call_command("runbot", "nosuchbot")
    inactive = bot_create(is_active=False)
    with pytest.raises(CommandError, match="deactivated"):
        call_command("runbot", str(inactive.pk))
    with pytest.raises(CommandError, match="not both"):
        call_command("runbot", "--all", str(inactive.pk))
    with pytest.raises(CommandError, match="not both"):
        call_command("runbot")
