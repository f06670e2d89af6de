"""What one ``getUpdates`` batch has read ahead and put off, for the code handling it.

The polling fast path (:mod:`botplatform.telegram.batch`) handles a whole batch in one
transaction. The application's handler (``workflows/handler.py``, ``EngineBatch``)
opens this scope for the batch (the transport never touches it) and, before any
update is handled, reads, one statement each, what every update
would otherwise read on its own (its user row, its session's waiting execution) and
takes all the session locks. Writes that may wait until the end of the transaction
(a waiting execution's new state, step logs, last-seen stamps) are collected here and go out in the
batch's single write statement.

Everything else asks :func:`current` and gets ``None``: the per-update path, the
webhook, timers and the simulator behave exactly as before. Prefetched entries are
served once; the second update of the same chat in a batch reads the database as
usual (after the put-off writes are flushed).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

_local = threading.local()
_MISSING = object()


@dataclass
class BatchScope:
    # (project_id, telegram_id) -> BotUser, read for the batch; absent: not read (new user).
    users: dict[tuple[int, int], Any] = field(default_factory=dict)
    # Session keys whose advisory lock this transaction already holds.
    locked_sessions: set[str] = field(default_factory=set)
    # session_key -> the waiting execution (row-locked) or None, read under the lock.
    waiting: dict[str, Any] = field(default_factory=dict)
    # Executions whose new (waiting) state is not written yet: pk -> execution.
    executions: dict[int, Any] = field(default_factory=dict)
    # Users whose last_seen_at stamp is not written yet.
    last_seen: set[int] = field(default_factory=set)
    # Step logs not inserted yet.
    step_logs: list[Any] = field(default_factory=list)
    # Cache values read ahead for the batch (key -> value; a key read but absent is in
    # ``state_read`` only), and the (user_id, project_id) whose state was read ahead.
    state_values: dict[str, Any] = field(default_factory=dict)
    state_read: set[str] = field(default_factory=set)
    state_users: set[tuple[int, int]] = field(default_factory=set)
    # Of those, the ones whose state was stale and loaded from the database ahead.
    state_loaded: set[tuple[int, int]] = field(default_factory=set)

    def user_take(self, project_id: int, telegram_id: int) -> Any:
        """The prefetched user row, once; None when it was not read ahead."""
        return self.users.pop((project_id, telegram_id), None)

    def waiting_take(self, session_key: str) -> tuple[bool, Any]:
        """(True, execution or None) the first time a prefetched session is asked."""
        execution = self.waiting.pop(session_key, _MISSING)
        if execution is _MISSING:
            return False, None
        return True, execution


def current() -> BatchScope | None:
    """The batch being handled in this thread, if any."""
    return getattr(_local, "scope", None)


@contextmanager
def batch_scope(scope: BatchScope) -> Iterator[BatchScope]:
    """Make ``scope`` the current batch of this thread for the duration."""
    previous = current()
    _local.scope = scope
    try:
        yield scope
    finally:
        _local.scope = previous
