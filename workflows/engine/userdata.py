"""The user's data as templates and conditions see it, loaded once per event.

Reads go through the loyalty area's ``users.selectors.user_state_get`` (one Redis
round trip when warm); writes through its variable services. The runner patches its
in-memory copy after each write, because the cache is invalidated only when the
transaction commits and the rest of this event must already see the new values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from users.selectors import (
    PROFILE_FIELDS,
    bonus_history_get,
    referral_link_build,
    user_state_get,
)
from users.variables import user_variable_delete, user_variable_increment, user_variable_set
from workflows.engine.templating import Lazy

if TYPE_CHECKING:
    from botplatform.models import Bot
    from users.models import BotUser
    from users.readahead import UsersAhead

HISTORY_LIMIT = 5


def _state_load(user: BotUser, cached: dict | None, ahead: UsersAhead | None) -> tuple[dict, dict]:
    """(profile, variables) of the user, through the loyalty area's cached selector."""
    state = user_state_get(user_id=user.pk, project_id=user.project_id, cached=cached, ahead=ahead)
    return dict(state.profile), dict(state.variables)


def _history_text(user: BotUser) -> str:
    """The last ledger entries, one per line (read only when a template shows them)."""
    lines = []
    for row in bonus_history_get(user_id=user.pk, limit=HISTORY_LIMIT):
        label = row.reason or row.get_kind_display()
        lines.append(f"{row.created_at:%d.%m.%Y} {row.amount:+d} {label}")
    return "\n".join(lines)


def event_data(event: object) -> dict[str, Any]:
    """An API event's ``{"name": ..., **payload}`` for templates (``event.*``): the
    name is the event's ``payload``, the JSON payload its ``text`` (checked by the API)."""
    import json

    try:
        payload = json.loads(getattr(event, "text", "") or "{}")
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    return {**payload, "name": getattr(event, "payload", "")}


class UserData:
    """Lazy, per-event view of one user's profile and variables."""

    def __init__(self, user: BotUser, bot: Bot | None) -> None:
        self.user = user
        self.bot = bot
        self._profile: dict | None = None
        self._variables: dict | None = None
        self._context: dict | None = None
        self._cached: dict | None = None
        self._ahead: UsersAhead | None = None
        self.event_data: dict = {}  # an API event's name and payload (templates: event.*)
        # (the user's language, the project's default, the project's languages), once
        # known (StepRuntime.language); cleared when the user chooses another language
        self.language: tuple[str, str, list[str]] | None = None

    def prime(self, cached: dict | None, ahead: UsersAhead | None = None) -> None:
        """Serve the first load from ``cached`` (the caller's one cache round trip,
        ``users.selectors.user_state_read``) and, in a batch, its read-ahead."""
        self._cached, self._ahead = cached, ahead

    def _load(self) -> None:
        if self._profile is None:
            self._profile, self._variables = _state_load(self.user, self._cached, self._ahead)
            self._cached = None  # only the first read: later ones see later writes

    @property
    def variables(self) -> dict:
        self._load()
        return self._variables  # type: ignore[return-value]

    def context(self) -> dict[str, Any]:
        """The whitelisted tree: plain dicts of plain values, nothing else."""
        if self._context is not None:
            return self._context
        self._load()
        profile, variables = self._profile or {}, self._variables or {}
        bot_username = self.bot.username if self.bot else ""
        code = profile.get("referral_code", "")
        full_name = " ".join(
            part for part in (profile.get("first_name"), profile.get("last_name")) if part
        )
        user = {key: profile.get(key) for key in PROFILE_FIELDS if key != "is_blocked"}
        user.update(
            full_name=full_name,
            balance=variables.get("balance", 0),
            level=variables.get("level", ""),
            referrals=variables.get("referrals", 0),
            referral_link=(
                referral_link_build(bot_username=bot_username, referral_code=code)
                if bot_username
                else f"ref_{code}"
            ),
            history=Lazy(lambda: _history_text(self.user)),
        )
        custom = {
            key: value
            for key, value in variables.items()
            if key not in {"balance", "level", "referrals"}
        }
        bot = {
            "username": bot_username,
            "link": f"https://t.me/{bot_username}" if bot_username else "",
        }
        self._context = {"user": user, "vars": custom, "bot": bot, "event": self.event_data}
        return self._context

    # Writes -----------------------------------------------------------------

    def variable_set(self, key: str, value: Any) -> None:
        user_variable_set(
            user_id=self.user.pk, project_id=self.user.project_id, key=key, value=value
        )
        self.variables[key] = value
        self._context = None

    def variable_delete(self, key: str) -> None:
        user_variable_delete(user_id=self.user.pk, project_id=self.user.project_id, key=key)
        self.variables.pop(key, None)
        self._context = None

    def variable_increment(self, key: str, by: int | float) -> int | float:
        value = user_variable_increment(
            user_id=self.user.pk, project_id=self.user.project_id, key=key, by=by
        )
        self.variables[key] = value
        self._context = None
        return value

    def balance_update(self, *, balance: int, level: str | None = None) -> None:
        self.variables["balance"] = balance
        if level:
            self.variables["level"] = level
        self._context = None
