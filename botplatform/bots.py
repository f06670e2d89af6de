"""Connecting and looking after bots: the admin, loaddemo and runbot share these.

- :func:`bot_identity_fetch` asks Telegram (getMe) who a token belongs to, so a wrong
  token is refused with Telegram's answer and the username is never typed by hand.
- :func:`bots_changed_bump` / :func:`bots_changed_read`: a counter in Redis that every
  bot or project save bumps after commit; ``runbot`` reads it once a second and
  looks for new, re-activated or deactivated bots at once instead of waiting for the
  next discovery interval.
- :func:`webhook_secret_rotate` and :func:`tokens_reencrypt`: secret changes;
  :func:`webhook_secret_get`: what the webhook compares a request's secret with.
- :func:`bot_live_state`: what the bot's admin page shows about its delivery now.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.contrib.admin.models import CHANGE, LogEntry
from django.db import connection, transaction

from botplatform import cache as keys
from botplatform.models import Bot, TelegramUpdate, generate_webhook_secret

logger = logging.getLogger(__name__)


# --- getMe --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BotIdentity:
    telegram_id: int
    username: str


class TokenRefused(Exception):
    """Telegram did not accept the token, or could not be asked; the text says which."""


def bot_identity_fetch(*, token: str) -> BotIdentity:
    """getMe through the configured Bot API server; raises :class:`TokenRefused`."""
    from botplatform.telegram.client import api, error_classify

    try:
        me = api().get_me(token)
    except Exception as exc:
        error = error_classify(exc)
        if error.kind == "network":
            raise TokenRefused(
                "Could not reach Telegram to check this token, so the bot was not saved. "
                f"Check this server's internet access and try again. ({error.description})"
            ) from None
        code = f" ({error.code})" if error.code else ""
        raise TokenRefused(
            f"Telegram refused this token: {error.description}{code}. Copy the token "
            "again from @BotFather (/mybots, API Token)."
        ) from None
    if not isinstance(me, dict) or not me.get("is_bot", True) or not me.get("username"):
        raise TokenRefused("Telegram answered, but not with a bot for this token.")
    return BotIdentity(telegram_id=int(me.get("id") or 0), username=str(me["username"]))


# --- "bots changed" for runbot --all ---------------------------------------------------


def bots_changed_bump() -> None:
    """After commit: tell running runners to look at the bots again (best effort)."""

    def bump() -> None:
        client = keys.redis_client()
        if client is None:
            return  # no shared Redis: runners rely on TELEGRAM_DISCOVERY_INTERVAL
        try:
            client.incr(keys.telegram_bots_changed_key())
        except Exception as exc:  # the discovery interval still catches the change
            logger.warning("Could not signal runners that bots changed: %s", exc)

    transaction.on_commit(bump)


def bots_changed_read() -> int | None:
    """The counter's value (None without Redis); a change means "discover now"."""
    client = keys.redis_client()
    if client is None:
        return None
    try:
        value = client.get(keys.telegram_bots_changed_key())
    except Exception:
        return None  # Redis down: the discovery interval still applies
    return int(value) if value else 0


# --- Secrets -----------------------------------------------------------------------


def _log_change(*, user, bot: Bot, message: str) -> None:
    """An admin history entry ("History" on the bot's page): who, when, what."""
    LogEntry.objects.log_actions(
        user_id=user.pk, queryset=[bot], action_flag=CHANGE, change_message=message
    )


def bot_token_replaced_log(*, user, bot: Bot) -> None:
    """Audit entry for a new token (never the token itself)."""
    _log_change(user=user, bot=bot, message=f"Token replaced (now {bot.token_masked}).")


def webhook_secret_rotate(*, bot_id: int, user, base_url: str) -> Bot:
    """A fresh webhook secret; a bot in webhook mode is re-registered with Telegram.

    The new secret is stored only once Telegram accepted it (webhook mode), so the
    stored secret and the one Telegram sends never disagree. Raises
    ``TelegramCallError`` when Telegram refuses; nothing changes then.
    """
    from botplatform.telegram.webhooks import webhook_set

    bot = Bot.objects.get(pk=bot_id)
    bot.webhook_secret = generate_webhook_secret()
    if bot.mode == Bot.Mode.WEBHOOK:
        webhook_set(bot=bot, base_url=base_url)
    with transaction.atomic():
        Bot.objects.filter(pk=bot.pk).update(webhook_secret=bot.webhook_secret)
        note = " and re-registered with Telegram" if bot.mode == Bot.Mode.WEBHOOK else ""
        _log_change(user=user, bot=bot, message=f"Webhook secret rotated{note}.")
    return bot


def webhook_secret_get(*, bot_id: int) -> str | None:
    """The webhook secret of an active bot, or None: one prepared statement. The
    webhook asks on every request; the ORM building the same query was ~9 % of a
    request's CPU (py-spy, the peer benchmark's webhook phase). Read fresh every time:
    a rotated secret takes effect at once."""
    if not 0 < bot_id < 2**63:  # a hostile id in the URL: no such bot, not a bigint error
        return None
    table = connection.ops.quote_name(Bot._meta.db_table)
    sql = f"SELECT webhook_secret FROM {table} WHERE id = %s AND is_active"  # noqa: S608 (quoted)
    with connection.cursor() as cursor:
        cursor.execute(sql, [bot_id])
        row = cursor.fetchone()
    return None if row is None else row[0]


def tokens_reencrypt() -> int:
    """Every token under the newest key of BOT_TOKEN_KEYS (and its hash); returns the count.

    Row by row, each in its own short transaction, so it can run while the platform
    serves traffic: every process can read both keys during the rotation.
    """
    count = 0
    for pk in Bot.objects.order_by("pk").values_list("pk", flat=True):
        with transaction.atomic():
            bot = Bot.objects.select_for_update().filter(pk=pk).first()
            if bot is None:
                continue
            bot.save(update_fields=["token", "token_hash"])
        count += 1
    return count


# --- Live state ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BotLiveState:
    delivery: str
    last_update_at: datetime | None
    last_error: str


def bot_live_state(*, bot: Bot) -> BotLiveState:
    """How the bot receives updates right now, its last update and last error."""
    if bot.mode == Bot.Mode.WEBHOOK:
        delivery = "Webhook: Telegram calls this server."
    else:
        from botplatform.telegram.leases import lease_holder

        try:
            name = lease_holder(bot_id=bot.pk)
        except Exception:
            name = None
        if name:
            delivery = f"Long polling: runner {name} is polling it."
        elif not bot.is_active:
            delivery = "Long polling, but the bot is deactivated."
        else:
            delivery = "Long polling: no runner is polling it now (start manage.py runbot --all)."
    last = (
        TelegramUpdate.objects.filter(bot_id=bot.pk)
        .order_by("-update_id")
        .values_list("received_at", flat=True)
        .first()
    )
    last_error = (
        bot.status_message if bot.status in {Bot.Status.ERROR, Bot.Status.UNAUTHORIZED} else ""
    )
    return BotLiveState(delivery=delivery, last_update_at=last, last_error=last_error)


def _bots_changed_receiver(sender, **kwargs) -> None:
    bots_changed_bump()


def signals_connect() -> None:
    """Saving or deleting a bot or a project (its is_active) wakes the runners."""
    from django.db.models.signals import post_delete, post_save

    from botplatform.models import Project

    for model in (Bot, Project):
        post_save.connect(_bots_changed_receiver, sender=model, dispatch_uid=f"bots-{model}")
        post_delete.connect(_bots_changed_receiver, sender=model, dispatch_uid=f"bots-d-{model}")
