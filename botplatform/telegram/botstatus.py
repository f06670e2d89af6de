"""A bot's admin-visible status (ok, unauthorized, unreachable), set by the transport."""

from __future__ import annotations

import logging

from django.utils import timezone

from botplatform.models import Bot

logger = logging.getLogger(__name__)


def bot_status_set(
    *, bot_id: int, status: str, message: str = "", token: str | None = None
) -> bool:
    """Set a bot's admin-visible status; a no-op (no write) when it is unchanged.

    With ``token``, only while the bot still has that token: a verdict about an old
    token must not land on the one an operator has just pasted.
    """
    bots = Bot.objects.filter(pk=bot_id)
    if token is not None:
        bots = bots.filter(token=token)
    changed = bots.exclude(status=status, status_message=message[:500]).update(
        status=status, status_message=message[:500], status_changed_at=timezone.now()
    )
    return bool(changed)


def bot_mark_unauthorized(*, bot: Bot, description: str = "") -> None:
    """401 from Telegram: stop using the bot and say so where operators look."""
    message = (
        f"Telegram rejected the token {bot.token_masked} (401 Unauthorized"
        f"{': ' + description if description else ''}). Paste a new token from @BotFather."
    )
    if bot_status_set(
        bot_id=bot.pk, status=Bot.Status.UNAUTHORIZED, message=message, token=bot.token
    ):
        logger.error("Bot %s (%s): %s Polling stopped.", bot.pk, bot, message)
