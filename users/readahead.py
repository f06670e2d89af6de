"""What a batch of updates has read ahead from the ledger, and the stamps it put off.

The polling fast path handles a whole wave of updates in one transaction. The
application's handler (``workflows/handler.py``) creates one :class:`UsersAhead` per
wave (inside the engine's :class:`workflows.engine.batch.Batch`), fills it with one
statement and one Redis round trip (:func:`users.selectors.user_states_prefetch`) and
passes it explicitly to :func:`users.botusers.bot_user_upsert` and to the state reads
(:func:`users.selectors.user_state_read`, :func:`users.selectors.user_state_get`).
Every function taking one accepts ``None``: then it reads and writes for itself.
Prefetched entries are served once; a second read of the same user reads as usual.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class UsersAhead:
    """The ledger's half of one batch."""

    # (project_id, telegram_id) -> BotUser, read for the batch; absent: not read (new user).
    users: dict[tuple[int, int], Any] = field(default_factory=dict)
    # Users whose last_seen_at stamp is not written yet (one UPDATE at the batch's end).
    last_seen: set[int] = field(default_factory=set)
    # Cache values read ahead (key -> value; a key read but absent is in ``state_read``
    # only), and the (user_id, project_id) whose state was read ahead.
    state_values: dict[str, Any] = field(default_factory=dict)
    state_read: set[str] = field(default_factory=set)
    state_users: set[tuple[int, int]] = field(default_factory=set)
    # Of those, the ones whose state was stale and loaded from the database ahead.
    state_loaded: set[tuple[int, int]] = field(default_factory=set)

    def user_take(self, project_id: int, telegram_id: int) -> Any:
        """The prefetched user row, once; None when it was not read ahead."""
        return self.users.pop((project_id, telegram_id), None)
