"""Precise timers: wait timeouts and delays fire within about a second of their time.

The execution row is the truth (``wait_until`` with its status: ``waiting`` for a
wait's timeout, ``running`` with a ``delay`` pending for a delay). A poller
(:func:`timers_fire_due`, run every ``WORKFLOW_TIMER_POLL_INTERVAL`` seconds by the
bot runner and by ``manage.py runtimers``, see :class:`botplatform.periodic.TimerLoop`)
asks the database for what is due through two partial indexes and fires it at once.
Nothing is held in memory or in a broker, so a restarted process, a lost Celery task
or a broker's visibility timeout loses nothing: the next poll finds the row still
due. The once-a-minute sweep (``workflows.tasks.executions_sweep``) stays as the
fallback when no poller runs.

Exactly once: each timer is taken under a non-blocking advisory lock (a second
poller skips it rather than queueing behind it), then fired by
``services.execution_timer_fire`` / ``services.execution_expire``, which re-check the
row under the session and row locks (still waiting on that very pause, still due)
before they change its status; a second firing finds the status changed and does
nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.utils import timezone

from botplatform.locks import LockNotAcquired, advisory_lock
from workflows import services
from workflows.models import WorkflowExecution

logger = logging.getLogger(__name__)
Status = WorkflowExecution.Status

# One poll fires at most this many timers; the rest come at the next poll.
TIMERS_PER_POLL = 200
# A timer whose firing raised is left to the next attempt after this many seconds
# (or to the sweep), not retried twice a second.
FAILED_RETRY_SECONDS = 60.0
_failed: dict[tuple[str, int], float] = {}


def timers_due(*, now: datetime | None = None, limit: int = TIMERS_PER_POLL) -> list[tuple]:
    """Due timers, earliest first: ("expire", id, None) and ("delay", id, seq).

    Two index range scans (``execution_waiting_due_idx``, ``execution_paused_due_idx``);
    HTTP pauses are left to the sweep (their ``wait_until`` is a lost request's
    deadline, not a user-visible time).
    """
    now = now or timezone.now()
    waits = WorkflowExecution.objects.filter(status=Status.WAITING, wait_until__lte=now)
    waits = waits.order_by("wait_until").values_list("pk", "wait_until")[:limit]
    pauses = WorkflowExecution.objects.filter(
        status=Status.RUNNING, wait_until__lte=now, context__pending__kind="delay"
    )
    pauses = pauses.order_by("wait_until").values_list("pk", "wait_until", "context")[:limit]
    due = [(until, "expire", pk, None) for pk, until in waits]
    due += [
        (until, "delay", pk, int((context.get("pending") or {}).get("seq", -1)))
        for pk, until, context in pauses
    ]
    due.sort(key=lambda item: item[0])
    return [(kind, pk, seq) for _until, kind, pk, seq in due[:limit]]


def timer_fire(kind: str, execution_id: int, seq: int | None) -> bool:
    """Fire one timer unless another poller is firing it now; True if it did."""
    try:
        with advisory_lock(f"workflow:timer:{execution_id}"):
            if kind == "expire":
                return services.execution_expire(execution_id=execution_id)
            return services.execution_timer_fire(execution_id=execution_id, seq=seq)
    except LockNotAcquired:
        return False


def timers_fire_due(*, limit: int = TIMERS_PER_POLL) -> int:
    """Fire every due timer (up to ``limit``); the number fired. Never raises."""
    now = time.monotonic()
    for key, retry_at in list(_failed.items()):
        if retry_at <= now:
            del _failed[key]
    due = [timer for timer in timers_due(limit=limit) if timer[:2] not in _failed]
    threads = min(len(due), max(1, settings.WORKFLOW_TIMER_THREADS))
    if threads <= 1:
        return sum(_fire_guarded(*timer) for timer in due)
    return _fire_side_by_side(due, threads)


def _fire_side_by_side(due: list[tuple], threads: int) -> int:
    """A burst of due timers, fired by ``threads`` threads side by side (each
    conversation is locked on its own); each thread closes its connection at the end."""
    queue = list(reversed(due))
    lock = threading.Lock()
    fired = [0]

    def work() -> None:
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    timer = queue.pop()
                done = _fire_guarded(*timer)
                with lock:
                    fired[0] += done
        finally:
            connection.close()

    workers = [threading.Thread(target=work, name="timer") for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return fired[0]


def _fire_guarded(kind: str, execution_id: int, seq: int | None) -> bool:
    try:
        return timer_fire(kind, execution_id, seq)
    except Exception:
        logger.exception("timer %s of execution %s failed; retried later", kind, execution_id)
        if len(_failed) < 10_000:
            _failed[(kind, execution_id)] = time.monotonic() + FAILED_RETRY_SECONDS
        return False
