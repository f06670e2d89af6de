"""A batch: the updates of one transaction, and what they read ahead and put off.

The engine's own API for handling many updates at once, carried on an explicit
object (no thread-local): the handler (``workflows/handler.py``, ``EngineBatch``)
creates one :class:`Batch` per wave of the polling fast path and

1. **prepares** it: takes every session lock in one statement (recorded in
   :attr:`Batch.locked_sessions`), reads the wave's users and their cached state
   (:attr:`Batch.users`, the ledger's :class:`users.readahead.UsersAhead`) and every
   waiting execution (:func:`workflows.engine.waiting.waiting_prefetch`) ahead;
2. passes it to :func:`workflows.services.event_process` for each update, which hands
   it down on the run state (``RunState.batch``) to the waiting read and the writes;
3. **finishes** it: :func:`workflows.engine.deferred.deferred_writes` and
   :func:`users.botusers.last_seen_writes` turn what it put off (waiting executions'
   new state, step logs, last-seen stamps) into bulk SQL for the batch's one write.

Everything that takes a batch accepts ``None``: a single update, the webhook, timers
and the simulator lock, read and write for themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botplatform.locks import session_lock
from users.readahead import UsersAhead

_MISSING = object()


@dataclass
class Batch:
    """The engine's state of one batch (see the module docstring)."""

    # Session keys whose advisory lock this transaction already holds.
    locked_sessions: set[str] = field(default_factory=set)
    # session_key -> the waiting execution (row-locked) or None, read under the lock.
    waiting: dict[str, Any] = field(default_factory=dict)
    # Executions whose new (waiting) state is not written yet: pk -> execution.
    executions: dict[int, Any] = field(default_factory=dict)
    # Step logs not inserted yet.
    step_logs: list[Any] = field(default_factory=list)
    # The ledger's read-ahead (users, their cached state) and put-off last-seen stamps.
    users: UsersAhead = field(default_factory=UsersAhead)

    def waiting_take(self, session_key: str) -> tuple[bool, Any]:
        """(True, execution or None) the first time a prefetched session is asked."""
        execution = self.waiting.pop(session_key, _MISSING)
        if execution is _MISSING:
            return False, None
        return True, execution


def session_lock_once(batch: Batch | None, session_key: str) -> None:
    """:func:`botplatform.locks.session_lock`, unless the batch took it with the rest
    of its sessions (one statement for all, see ``Batch.locked_sessions``)."""
    if batch is not None and session_key in batch.locked_sessions:
        return
    session_lock(session_key)
