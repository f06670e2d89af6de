"""Bot secrets are write-only in the admin: no oracle, no full value, rotation, audit."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from botplatform.models import Bot
from tests.factories import bot_create

pytestmark = pytest.mark.django_db

TOKEN = "5550001:AAHabcdefghijklmnopqrstuvwxyz0123456"


def _listing(client, query: str) -> tuple[int, tuple[str, ...]]:
    """Status and the bots the changelist shows for a query string."""
    client.raise_request_exception = False  # a refused lookup is a 400, as in production
    response = client.get(reverse("admin:botplatform_bot_changelist") + "?" + query)
    if response.status_code != 200:
        return response.status_code, ()
    return 200, tuple(sorted(str(bot) for bot in response.context["cl"].result_list))


@pytest.mark.parametrize(
    "field, lookup",
    [
        ("token", "gte"),
        ("token", "lt"),
        ("token", "startswith"),
        ("token", "contains"),
        ("token_hash", "gte"),
        ("webhook_secret", "startswith"),
        ("webhook_secret", "gte"),
        ("webhook_secret", "exact"),
    ],
)
def test_no_query_string_answers_questions_about_a_secret(operator_client, project, field, lookup):
    bot = bot_create(project=project, token=TOKEN, username="shop_bot")
    secret = {
        "token": bot.token,
        "token_hash": bot.token_hash,
        "webhook_secret": bot.webhook_secret,
    }[field]
    # Two probes that the old admin answered differently (a prefix that matches and
    # one that does not): now both are refused the same way.
    answers = {
        _listing(operator_client, f"{field}__{lookup}={probe}")
        for probe in (secret[:1], secret, "~", "0", secret[:6])
    }
    assert len(answers) == 1, answers
    status, shown = answers.pop()
    assert status == 400 or shown == (), (status, shown)


# --- Webhook secret rotation ------------------------------------------------------------


def test_rotating_the_webhook_secret_from_the_bot_page_writes_a_log_entry(admin_client, project):
    bot = bot_create(project=project)
    old = bot.webhook_secret
    url = reverse("admin:botplatform_bot_rotate_webhook_secret", args=[bot.pk])
    assert admin_client.get(url).status_code == 302  # a link cannot rotate it
    assert Bot.objects.get(pk=bot.pk).webhook_secret == old
    response = admin_client.post(url)
    assert response.status_code == 302
    bot.refresh_from_db()
    assert bot.webhook_secret != old and len(bot.webhook_secret) >= 32
    entry = LogEntry.objects.get(object_id=str(bot.pk))
    assert entry.get_change_message() == "Webhook secret rotated."
    assert old not in entry.change_message and bot.webhook_secret not in entry.change_message


def _bot_form(bot: Bot, **changes) -> dict:
    """What the bot's change page posts when its Rotate button is pressed."""
    data = {
        "project": bot.project_id,
        "username": bot.username,
        "new_token": "",
        "mode": bot.mode,
        "_rotate_webhook_secret": "",
    }
    if bot.is_active:
        data["is_active"] = "on"
    data.update(changes)
    return data


def test_rotating_with_unsaved_edits_saves_them_too(admin_client, project):
    bot = bot_create(project=project, username="shop_bot")
    old = bot.webhook_secret
    url = reverse("admin:botplatform_bot_rotate_webhook_secret", args=[bot.pk])
    response = admin_client.post(url, _bot_form(bot, username="renamed_bot"))
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:botplatform_bot_change", args=[bot.pk])
    bot.refresh_from_db()
    assert bot.username == "renamed_bot"
    assert bot.webhook_secret != old


def test_rotating_with_an_invalid_edit_shows_the_error_and_keeps_the_secret(admin_client, project):
    bot = bot_create(project=project, username="shop_bot")
    old = bot.webhook_secret
    url = reverse("admin:botplatform_bot_rotate_webhook_secret", args=[bot.pk])
    response = admin_client.post(url, _bot_form(bot, username="x" * 200))
    assert response.status_code == 200
    assert "x" * 200 in response.content.decode()  # the edit is still on the page
    assert response.context["adminform"].form.errors
    change_url = reverse("admin:botplatform_bot_change", args=[bot.pk])
    assert f'action="{change_url}"' in response.content.decode()  # Save goes to the bot
    bot.refresh_from_db()
    assert (bot.username, bot.webhook_secret) == ("shop_bot", old)


def test_rotating_with_no_edits_writes_only_the_rotation(admin_client, project):
    bot = bot_create(project=project, username="shop_bot")
    url = reverse("admin:botplatform_bot_rotate_webhook_secret", args=[bot.pk])
    admin_client.post(url, _bot_form(bot))
    assert [e.get_change_message() for e in LogEntry.objects.all()] == ["Webhook secret rotated."]


def test_rotating_a_webhook_bots_secret_registers_the_new_one_with_telegram(
    admin_client, project, double, settings
):
    settings.TELEGRAM_WEBHOOK_BASE_URL = "https://bots.example.com"
    bot = bot_create(project=project, mode=Bot.Mode.WEBHOOK)
    double.bot_add(bot.token, bot.username)
    admin_client.post(reverse("admin:botplatform_bot_rotate_webhook_secret", args=[bot.pk]))
    bot.refresh_from_db()
    calls = double.calls_of("setWebhook", bot.token)
    assert len(calls) == 1
    assert calls[0].params["secret_token"] == bot.webhook_secret
    assert "re-registered with Telegram" in LogEntry.objects.get().change_message


def test_a_refused_rotation_keeps_the_old_secret(admin_client, project, double, settings):
    settings.TELEGRAM_WEBHOOK_BASE_URL = "https://bots.example.com"
    bot = bot_create(project=project, mode=Bot.Mode.WEBHOOK)
    double.bot_add(bot.token, bot.username)
    double.revoke(bot.token)
    response = admin_client.post(
        reverse("admin:botplatform_bot_rotate_webhook_secret", args=[bot.pk]), follow=True
    )
    assert "the old one stays" in response.content.decode()
    assert Bot.objects.get(pk=bot.pk).webhook_secret == bot.webhook_secret
    assert not LogEntry.objects.exists()


def test_an_operator_cannot_rotate_another_projects_secret(operator_client, other_project):
    bot = bot_create(project=other_project)
    url = reverse("admin:botplatform_bot_rotate_webhook_secret", args=[bot.pk])
    assert operator_client.post(url).status_code in (302, 403, 404)
    assert Bot.objects.get(pk=bot.pk).webhook_secret == bot.webhook_secret


# --- Tokens from the admin: getMe ------------------------------------------------------


def test_a_wrong_token_is_refused_with_telegrams_answer(admin_client, project, double):
    response = admin_client.post(
        reverse("admin:botplatform_bot_add"),
        {"project": project.pk, "new_token": TOKEN, "mode": "polling", "is_active": "on"},
    )
    assert response.status_code == 200
    assert "Telegram refused this token: Unauthorized (401)" in response.content.decode()
    assert not Bot.objects.exists()
    assert TOKEN not in response.content.decode()


def test_a_replaced_token_is_logged_masked(admin_client, project, double):
    bot = bot_create(project=project)
    double.bot_add(TOKEN, "new_name_bot")
    response = admin_client.post(
        reverse("admin:botplatform_bot_change", args=[bot.pk]),
        {
            "project": project.pk,
            "username": bot.username,
            "new_token": TOKEN,
            "mode": "polling",
            "is_active": "on",
        },
    )
    assert response.status_code == 302
    bot.refresh_from_db()
    assert (bot.token, bot.username) == (TOKEN, "new_name_bot")
    messages = [e.get_change_message() for e in LogEntry.objects.filter(object_id=str(bot.pk))]
    assert any(m.startswith("Token replaced (now 5550001:…") for m in messages), messages
    assert not any(TOKEN.split(":")[1] in e.change_message for e in LogEntry.objects.all())


def test_the_bot_page_shows_its_live_state(admin_client, project):
    from botplatform.models import TelegramUpdate

    bot = bot_create(project=project)
    Bot.objects.filter(pk=bot.pk).update(
        status=Bot.Status.ERROR, status_message="Telegram refused polling (409)"
    )
    TelegramUpdate.objects.create(bot=bot, update_id=7, chat_id=1, payload={"update_id": 7})
    html = admin_client.get(reverse("admin:botplatform_bot_change", args=[bot.pk])).content.decode()
    assert "no runner is polling it now" in html
    assert "Telegram refused polling (409)" in html
    assert "None yet" not in html


@pytest.mark.parametrize("role", ["editor", "analyst", "support"])
def test_only_a_role_that_may_see_secrets_rotates_them(client, project, role):
    from tests.admin.conftest import operator_create

    bot = bot_create(project=project)
    client.force_login(operator_create(f"op_{role}", project, role=role))
    url = reverse("admin:botplatform_bot_rotate_webhook_secret", args=[bot.pk])
    assert client.post(url).status_code in (403, 404)
    assert Bot.objects.get(pk=bot.pk).webhook_secret == bot.webhook_secret
    assert not LogEntry.objects.exists()
