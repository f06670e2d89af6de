"""Celery beat's schedule, run by a long-running process when there is no beat.

In the embedded default (no REDIS_URL, no CELERY_BROKER_URL) tasks run in-process and
no ``celery beat`` exists: a delay's ETA task runs at once (a no-op, not due yet), so
delays, wait timeouts, deferred replies and scheduled broadcasts would never become
due. The bot runner, the one long-running process of that setup, then runs the
schedule itself. Every scheduled task is idempotent (claims by conditional UPDATE),
so two runners doing it is harmless.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings

logger = logging.getLogger(__name__)


def _interval(schedule) -> float | None:
    if isinstance(schedule, int | float):
        return float(schedule)
    if isinstance(schedule, timedelta):
        return schedule.total_seconds()
    run_every = getattr(schedule, "run_every", None)  # celery.schedules.schedule
    return run_every.total_seconds() if isinstance(run_every, timedelta) else None


class InProcessBeat:
    """Runs each interval entry of ``CELERY_BEAT_SCHEDULE`` once per its interval.

    The first run of each entry comes one interval after start, like beat's.
    """

    def __init__(
        self, schedule: dict | None = None, *, clock: Callable[[], float] = time.monotonic
    ):
        self.clock = clock
        self.entries: dict[str, tuple[dict, float]] = {}
        for name, entry in (
            settings.CELERY_BEAT_SCHEDULE if schedule is None else schedule
        ).items():
            seconds = _interval(entry.get("schedule"))
            if seconds and seconds > 0:
                self.entries[name] = (entry, seconds)
            else:
                logger.warning("Periodic task %s: only interval schedules run without beat", name)
        self._imported = False
        start = clock()
        self.next_run = {name: start + seconds for name, (_entry, seconds) in self.entries.items()}

    def run_due(self) -> list[str]:
        """Run every entry whose time has come; returns their names. Never raises."""
        from botplatform import heartbeat
        from botplatform.celery import app

        heartbeat.beat(heartbeat.SCHEDULER, detail={"mode": "in-process"})
        if not self._imported:
            app.loader.import_default_modules()  # registers every app's tasks
            self._imported = True
        ran = []
        for name, (entry, seconds) in self.entries.items():
            now = self.clock()
            if now < self.next_run[name]:
                continue
            self.next_run[name] = now + seconds
            try:
                app.tasks[entry["task"]].apply(
                    args=entry.get("args", ()), kwargs=entry.get("kwargs", {}), throw=True
                )
            except Exception:
                logger.exception("Periodic task %s failed; retried next interval", name)
            ran.append(name)
        return ran


class TimerLoop:
    """Runs the timer task (``WORKFLOW_TIMER_TASK``) in this process every
    ``WORKFLOW_TIMER_POLL_INTERVAL`` seconds, so waits and delays fire within about a
    second of their time instead of at the next minute's sweep.

    The task is named, not imported (infrastructure knows nothing of workflows). It
    reads what is due from the database each time, so nothing is lost when this
    process stops; any number of loops may run (the task fires each timer once).
    """

    def __init__(self, *, interval: float | None = None, task: str | None = None) -> None:
        self.interval = settings.WORKFLOW_TIMER_POLL_INTERVAL if interval is None else interval
        self.task = task or settings.WORKFLOW_TIMER_TASK

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def run_once(self) -> int:
        """One poll: the number of timers fired. Never raises."""
        from botplatform.queueing import task_named

        try:
            # Called, not applied: twice a second, Celery's per-task trace lines would
            # drown the runner's log.
            return int(task_named(self.task)() or 0)
        except Exception:
            logger.exception("Timer poll failed; retried at the next one")
            return 0

    def run(self, stop) -> None:
        """Poll until ``stop`` (a ``threading.Event``) is set."""
        from django.db import close_old_connections

        while not stop.wait(self.interval):
            close_old_connections()
            self.run_once()
        close_old_connections()
