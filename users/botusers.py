"""Bot users: find or create the project's user for a Telegram sender.

In a batch of the polling fast path the user row comes from the batch's read-ahead
(:class:`users.readahead.UsersAhead`) and a bare last-seen stamp waits for the
batch's one write (:func:`last_seen_writes`).
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from botplatform.models import Project
from users.invalidation import user_state_changed
from users.ledger import bonus_earn
from users.models import BotUser
from users.readahead import UsersAhead
from users.selectors import level_for


def _truncated(value: str | None, length: int) -> str:
    return (value or "")[:length]


def bot_user_upsert(
    *,
    project_id: int,
    telegram_id: int,
    chat_id: int,
    username: str = "",
    first_name: str = "",
    last_name: str = "",
    language_code: str = "",
    is_test: bool = False,
    ahead: UsersAhead | None = None,
) -> tuple[BotUser, bool]:
    """Find or create the project's user for a Telegram sender; True when created.

    Profile fields are written only when Telegram reports a change; ``last_seen_at``
    at most once a minute, so a known user usually costs one SELECT. A user who writes
    again is no longer "blocked". A new user gets the project's welcome bonus once.
    ``ahead``: a batch's read-ahead: the user row comes from there, and a bare
    last-seen stamp waits for the batch's one write (:func:`last_seen_writes`).
    """
    fields = {
        "chat_id": chat_id,
        "username": _truncated(username, 64),
        "first_name": _truncated(first_name, 128),
        "last_name": _truncated(last_name, 128),
        "language_code": _truncated(language_code, 16),
    }
    user = ahead.user_take(project_id, telegram_id) if ahead is not None else None
    if user is None:
        user = BotUser.objects.filter(project_id=project_id, telegram_id=telegram_id).first()
    if user is None:
        project = Project.objects.only("welcome_bonus", "levels").get(pk=project_id)
        with transaction.atomic():
            user, created = BotUser.objects.get_or_create(
                project_id=project_id,
                telegram_id=telegram_id,
                defaults={
                    **fields,
                    "is_test": is_test,
                    "level": level_for(levels=project.levels, lifetime_earned=0),
                },
            )
            if created and project.welcome_bonus > 0:
                result = bonus_earn(
                    user_id=user.pk,
                    amount=project.welcome_bonus,
                    idempotency_key=f"welcome:{user.pk}",
                    reason="Welcome bonus",
                )
                user.balance = result.balance
                user.lifetime_earned = project.welcome_bonus
                user.level = result.new_level or user.level
        if created:
            return user, True

    changes = {name: value for name, value in fields.items() if getattr(user, name) != value}
    if user.is_blocked:
        changes["is_blocked"] = False
    now = timezone.now()
    # last_seen_at is refreshed at most every USER_LAST_SEEN_RESOLUTION_SECONDS (5
    # minutes by default): a user chatting away costs no write per message.
    resolution = timedelta(seconds=settings.USER_LAST_SEEN_RESOLUTION_SECONDS)
    if changes or now - user.last_seen_at >= resolution:
        changes["last_seen_at"] = now
        if ahead is not None and set(changes) == {"last_seen_at"}:
            ahead.last_seen.add(user.pk)  # one UPDATE for the whole batch, at its end
            user.last_seen_at = now
            return user, False
        with transaction.atomic():
            BotUser.objects.filter(pk=user.pk).update(**changes)
            if set(changes) != {"last_seen_at"}:
                user_state_changed(user_id=user.pk, project_id=project_id)
        for name, value in changes.items():
            setattr(user, name, value)
    return user, False


def last_seen_writes(ahead: UsersAhead | None) -> list[tuple[str, list]]:
    """A batch's put-off ``last_seen_at`` stamps as (sql, params), and forget them."""
    if ahead is None or not ahead.last_seen:
        return []
    table = connection.ops.quote_name(BotUser._meta.db_table)
    statement = (
        f"UPDATE {table} SET last_seen_at = %s WHERE id = ANY(%s::bigint[])",  # noqa: S608
        [timezone.now(), sorted(ahead.last_seen)],
    )
    ahead.last_seen = set()
    return [statement]


def bot_user_language_set(user: BotUser, code: str) -> None:
    """Store the language a user chose ("" to go back to Telegram's)."""
    user.language = code[:16]
    BotUser.objects.filter(pk=user.pk).update(language=user.language)
