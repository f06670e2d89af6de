"""A bot's admin-visible status (ok, unauthorized, unreachable), set by the transport."""

from __future__ import annotations

import logging

from django.utils import timezone

from botplatform.models import Bot

logger = logging.getLogger(__name__)


def bot_status_set(*, bot_id: int, status: str, message: str = "") -> bool:
    """Set a bot's admin-visible status; a no-op (no write) when it is unchanged."""
    changed = (
        Bot.objects.filter(pk=bot_id)
        .exclude(status=status, status_message=message[:500])
        .update(status=status, status_message=message[:500], status_changed_at=timezone.now())
    )
    return bool(changed)


def bot_mark_unauthorized(*, bot: Bot, description: str = "") -> None:
    """401 from Telegram: stop using the bot and say so where operators look."""
    message = (
        f"Telegram rejected the token {bot.token_masked} (401 Unauthorized"
        f"{': ' + description if description else ''}). Paste a new token from @BotFather."
    )
    if bot_status_set(bot_id=bot.pk, status=Bot.Status.UNAUTHORIZED, message=message):
        logger.error("Bot %s (%s): %s Polling stopped.", bot.pk, bot, message)
