"""Variable paths: the names a template or an expression may read, and how they resolve.

Why a module of its own: templates (templating.py) and expressions (expressions.py)
both walk the same whitelisted tree of plain dicts, and each needs the other's
neighbour, not the other. A path only walks ``dict`` keys that do not start with an
underscore, so ``__class__``, settings or the ORM are unreachable by construction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

# Names a template (or a condition) may start a path with, and the fields known
# under the fixed namespaces. ``vars`` holds any custom variable name.
USER_FIELDS = frozenset(
    {
        "id",
        "telegram_id",
        "chat_id",
        "username",
        "first_name",
        "last_name",
        "full_name",
        "language_code",
        "referral_code",
        "referral_link",
        "balance",
        "level",
        "referrals",
        "history",
    }
)
BOT_FIELDS = frozenset({"username", "link"})
# ``trigger``: what started the conversation (``trigger.text``, ``trigger.match.1``).
TRIGGER_FIELDS = frozenset({"text", "match"})
# ``event``: an API event's name and payload (``event.name``, ``event.tracking_url``).
ROOTS = {
    "user": USER_FIELDS,
    "bot": BOT_FIELDS,
    "vars": None,
    "trigger": TRIGGER_FIELDS,
    "event": None,
}

IDENT = r"[A-Za-z][A-Za-z0-9_]*"
PATH_RE = re.compile(rf"^{IDENT}(?:\.{IDENT})*$")


class Lazy:
    """A value computed only when a template actually uses it (e.g. the ledger history)."""

    __slots__ = ("_func",)

    def __init__(self, func: Callable[[], Any]) -> None:
        self._func = func

    def resolve(self) -> Any:
        return self._func()


def path_check(path: tuple[str, ...]) -> str | None:
    """Why ``path`` is not a known variable, or None when it is."""
    root = path[0]
    if root not in ROOTS:
        if len(path) == 1:
            return (
                f"unknown variable '{root}': did you mean vars.{root}? "
                "(a user's variables are written vars.name)"
            )
        known = ", ".join(f"{r}.…" for r in ROOTS)
        return f"unknown variable '{'.'.join(path)}' (a name starts with {known})"
    if len(path) == 1:
        return f"'{root}' needs a field, e.g. {root}.{'city' if root == 'vars' else 'username'}"
    fields = ROOTS[root]
    if fields is not None and path[1] not in fields:
        return f"unknown variable '{'.'.join(path)}' (known: {', '.join(sorted(fields))})"
    return None


def value_resolve(context: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """Walk plain dict keys only; a missing or forbidden step yields None."""
    current: Any = context
    for name in path:
        if name.startswith("_") or not isinstance(current, dict):
            return None
        current = current.get(name)
        if isinstance(current, Lazy):
            current = current.resolve()
    if isinstance(current, Lazy):
        current = current.resolve()
    if current is None or isinstance(current, str | int | float | bool | list | Decimal):
        return current
    return None
