"""Webhook registration with Telegram (setWebhook / deleteWebhook)."""

from __future__ import annotations

from django.urls import reverse

from botplatform.models import Bot
from botplatform.telegram.client import api, error_classify
from botplatform.telegram.sender import TelegramCallError
from botplatform.telegram.updates import ALLOWED_UPDATES


def webhook_url(*, bot: Bot, base_url: str) -> str:
    return base_url.rstrip("/") + reverse("telegram_webhook", kwargs={"bot_id": bot.pk})


def webhook_set(*, bot: Bot, base_url: str) -> str:
    """Point Telegram at this server for the bot; the bot switches to webhook mode."""
    url = webhook_url(bot=bot, base_url=base_url)
    try:
        api().set_webhook(
            bot.token,
            url=url,
            secret_token=bot.webhook_secret,
            allowed_updates=ALLOWED_UPDATES,
        )
    except Exception as exc:
        raise TelegramCallError(error_classify(exc)) from None
    Bot.objects.filter(pk=bot.pk).update(mode=Bot.Mode.WEBHOOK)
    return url


def webhook_delete(*, bot: Bot, drop_pending: bool = False) -> None:
    """Stop webhook delivery; the bot switches back to polling mode."""
    try:
        api().delete_webhook(bot.token, drop_pending_updates=drop_pending or None)
    except Exception as exc:
        raise TelegramCallError(error_classify(exc)) from None
    Bot.objects.filter(pk=bot.pk).update(mode=Bot.Mode.POLLING)
