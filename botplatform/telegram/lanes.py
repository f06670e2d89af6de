"""The runner's worker pool: lanes of jobs, one job per lane at a time, in order.

A poller (``polling.BotPoller``) hands its recorded rows to the :class:`ChatPool` as
jobs: a :class:`BatchJob` (fresh rows, handled by ``batch.updates_run_batch``) or an
:class:`UpdateJob` (one row, ``dispatch.update_run``); or a poll's one update, not
recorded yet, as a :class:`DirectJob`, which the worker records and handles. A lane is a bot's or a chat's,
so a chat's updates run in order, different lanes in parallel, and one held lane
never holds the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Protocol

from django.db import close_old_connections

from botplatform.models import TelegramUpdate
from botplatform.telegram import budget

logger = logging.getLogger(__name__)


class BotPoller(Protocol):
    """What the pool needs of ``polling.BotPoller``: it runs the jobs' rows."""

    bot_id: int

    def _run_update(self, pk: int) -> None: ...

    def _run_batch(self, rows: list[TelegramUpdate], *, claimed: bool = False) -> None: ...

    def _run_direct(self, job: DirectJob) -> None: ...


class ConnectionCheck:
    """``close_old_connections()`` at most once per ``interval`` (and after a failure).

    Each call makes Django ping PostgreSQL (``SELECT 1``, its health check) before the
    next query, so calling it around every update costs a round trip per message. A
    broken connection still shows up at once: the failing job forces the next check.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.next_at = 0.0

    def __call__(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now >= self.next_at:
            close_old_connections()
            self.next_at = now + self.interval


BATCH_MAX = 100  # rows per merged batch (getUpdates hands out at most 100 at a time)
DETOUR_AFTER = 0.5  # s a bot's lane may be held by one job before other chats go around it

Lane = tuple[int, ...]  # (bot_id,) or (bot_id, chat_key)


class UpdateJob:
    """One recorded update, handled by ``update_run`` (with its retries)."""

    def __init__(self, poller: BotPoller, pk: int, chat: int) -> None:
        self.poller = poller
        self.pk = pk
        self.chats = {chat}

    def __call__(self) -> None:
        self.poller._run_update(self.pk)

    def split(self) -> list[tuple[int, UpdateJob]]:
        return [(next(iter(self.chats)), self)]


class BatchJob:
    """A poller's fresh rows for one lane; runs as one batch (see ``absorb``)."""

    def __init__(self, poller: BotPoller, rows: list[TelegramUpdate]) -> None:
        self.poller = poller
        self.rows = rows

    @property
    def chats(self) -> set[int]:
        return {row.chat_id or row.pk for row in self.rows}

    def __call__(self) -> None:
        self.poller._run_batch(self.rows)

    def absorb(self, lane: deque) -> None:
        """Take the same poller's batches queued right behind this one into it.

        Under load a poller comes back every few milliseconds with an update or two;
        by the time a worker is free, several such pieces wait in its lane. Run as one
        batch they cost the statements of one, and the lane's order is kept: merging
        stops at the first job that is not the same poller's batch.
        """
        while len(self.rows) < BATCH_MAX and lane:
            job = lane[0]
            if not (isinstance(job, BatchJob) and job.poller is self.poller):
                return
            self.rows.extend(lane.popleft().rows)

    def split(self) -> list[tuple[int, BatchJob]]:
        """One job per chat, each chat's rows in order."""
        groups: dict[int, list[TelegramUpdate]] = {}
        for row in self.rows:
            groups.setdefault(row.chat_id or row.pk, []).append(row)
        return [(chat, BatchJob(self.poller, rows)) for chat, rows in groups.items()]


class DirectJob:
    """A poll's one update, not recorded yet: the worker records it already claimed
    (one statement, on the connection that then handles it), tells the waiting poller
    (:meth:`wait`), and handles it as a wave of one. See ``ChatPool.submit_direct``."""

    def __init__(self, poller: BotPoller, update: object) -> None:
        self.poller = poller
        self.update = update
        self.chats: set[int] = set()  # unknown until recorded; the bot's lane keeps it
        self._recorded = threading.Event()
        self._rows: list[TelegramUpdate] = []
        self._error: BaseException | None = None

    def __call__(self) -> None:
        self.poller._run_direct(self)

    def split(self) -> list[tuple[int, DirectJob]]:
        return [(next(iter(self.chats), 0), self)]  # (only ever queued for an instant)

    def recorded(self, rows: list[TelegramUpdate]) -> None:
        """Recorded: ``rows`` are left for the poller to queue (a redelivered update's
        open row), or none when this job handles the update itself."""
        self._rows = rows
        self._recorded.set()

    def failed(self, error: BaseException) -> None:
        """Not recorded (the poller then records it the usual way)."""
        self._error = error
        self._recorded.set()

    def wait(self, timeout: float) -> list[TelegramUpdate]:
        """The rows for the poller to queue; raises what kept the update unrecorded."""
        if not self._recorded.wait(timeout):
            raise TimeoutError(f"the update was not recorded within {timeout:g} s")
        if self._error is not None:
            raise self._error
        return self._rows


class ChatPool:
    """Worker threads taking jobs from lanes; a lane's jobs run one at a time, in order.

    A lane is a FIFO of jobs with the same key; any free worker takes the next lane
    that has work and is not already running, so one slow lane holds one worker and
    the others serve every other lane. With batch handling on (the default), a bot's
    updates share one lane, ``(bot,)``: each ``getUpdates`` batch is then handled as
    one batch (one transaction per wave, see ``telegram/batch.py``). Without it, the
    lane is ``(bot, chat)``, so one bot's chats also run in parallel.

    A bot's lane held by one job for over ``DETOUR_AFTER`` (a handler looping until
    its budget stops it) would make the bot's other users wait. So the bot goes on a
    detour: the chats of that job keep the bot's lane (their order), every other chat
    gets a lane of its own, its queued rows included, until the bot has no work left.
    """

    def __init__(self, size: int, *, per_bot: bool = False) -> None:
        self.per_bot = per_bot
        self.cond = threading.Condition()
        self.lanes: dict[Lane, deque] = {}  # lanes with queued work
        self.ready: deque[Lane] = deque()  # lanes with queued work and no worker
        self.busy: dict[Lane, tuple[object, float]] = {}  # lane -> (job, started)
        self.detours: dict[int, set[int]] = {}  # bot -> the chats that keep its lane
        self.idle = 0  # workers waiting for a lane
        self.closing = False
        self.draining = threading.Event()
        self.threads = [
            threading.Thread(target=self._work, name=f"chat-worker-{i}", daemon=True)
            for i in range(max(size, 1))
        ]
        for thread in self.threads:
            thread.start()
        if per_bot:
            threading.Thread(target=self._watch, name="chat-pool-detours", daemon=True).start()

    def lane_of(self, bot_id: int, chat: int) -> Lane:
        if not self.per_bot:
            return (bot_id, chat)
        chats = self.detours.get(bot_id)
        return (bot_id,) if chats is None or chat in chats else (bot_id, chat)

    def submit(self, bot_id: int, chat: int, job: UpdateJob) -> None:
        with self.cond:
            self._put(self.lane_of(bot_id, chat), job)

    def submit_batch(self, poller: BotPoller, rows: list[TelegramUpdate]) -> None:
        """Fresh rows: one batch job per lane, in order (lane choice and queueing
        under one lock, so a detour cannot start between them)."""
        with self.cond:
            groups: dict[Lane, list[TelegramUpdate]] = {}
            for row in rows:
                groups.setdefault(self.lane_of(poller.bot_id, row.chat_id or row.pk), []).append(
                    row
                )
            for lane, group in groups.items():
                self._put(lane, BatchJob(poller, group))

    def submit_direct(self, poller: BotPoller, job: DirectJob) -> bool:
        """Give a poll's one unrecorded update to a worker at once, or refuse (False).

        Taken only when a worker is idle, nothing waits for one, and the bot has no
        job queued or running (no detour either): the worker then starts on it at
        once, the poller's wait for the recording is as short as the recorder's, and
        no earlier update of the bot can come after it. Otherwise the poller records
        the update through the recorder, as a batch.
        """
        lane = (poller.bot_id,)
        with self.cond:
            if (
                not self.per_bot
                or self.closing
                or self.idle == 0
                or self.ready
                or lane[0] in self.detours
                or any(key[0] == lane[0] for key in (*self.lanes, *self.busy))
            ):
                return False
            self._put(lane, job)
            return True

    def _put(self, lane: Lane, job: object) -> None:
        jobs = self.lanes.get(lane)
        if jobs is None:
            jobs = self.lanes[lane] = deque()
            if lane not in self.busy:
                self.ready.append(lane)
        jobs.append(job)
        self.cond.notify()

    def _work(self) -> None:
        check = ConnectionCheck()
        while True:
            with self.cond:
                while not self.ready:
                    if self.closing:
                        close_old_connections()
                        return
                    self.idle += 1
                    try:
                        self.cond.wait()
                    finally:
                        self.idle -= 1
                lane = self.ready.popleft()
                jobs = self.lanes[lane]
                job = jobs.popleft()
                if isinstance(job, BatchJob):
                    job.absorb(jobs)
                if not jobs:
                    del self.lanes[lane]
                self.busy[lane] = (job, time.monotonic())
            failed = False
            try:
                check()
                job()
            except (Exception, *budget.STOPS):
                failed = True
                logger.exception("Unexpected error in a chat worker")
            finally:
                budget.forget()
                with self.cond:
                    del self.busy[lane]
                    if lane in self.lanes:
                        self.ready.append(lane)  # behind the others: fair
                        self.cond.notify()
                    elif not any(key[0] == lane[0] for key in (*self.lanes, *self.busy)):
                        self.detours.pop(lane[0], None)  # the bot has no work left
                # A failure tidies up at once; going idle does not: the next job checks
                # anyway when a second has passed, so a quiet runner (one update per
                # poll) pings PostgreSQL at most once a second, not once per update.
                check(force=failed)

    def _watch(self) -> None:
        while not self.closing:
            time.sleep(0.1)
            with self.cond:
                self.detour_check()

    def detour_check(self, now: float | None = None) -> None:
        """Send a bot's other chats around a job that holds its lane (under ``cond``)."""
        now = time.monotonic() if now is None else now
        for lane, (job, started) in self.busy.items():
            if len(lane) != 1 or now - started < DETOUR_AFTER:
                continue
            bot_id = lane[0]
            keep = self.detours.get(bot_id)
            if keep is None:
                keep = self.detours[bot_id] = set(job.chats)
                logger.warning(
                    "Bot %s: an update has held its queue for over %g s; other chats go around it",
                    bot_id,
                    DETOUR_AFTER,
                )
            queued = self.lanes.get(lane)
            if not queued:
                continue
            stay: deque = deque()
            for waiting in queued:
                for chat, part in waiting.split():
                    if chat in keep:
                        stay.append(part)
                    else:
                        self._put((bot_id, chat), part)
            if stay:
                self.lanes[lane] = stay
            else:
                del self.lanes[lane]

    def drain(self, timeout: float) -> bool:
        """Let queued and running jobs finish (retry loops give up); True if all did."""
        self.draining.set()
        deadline = time.monotonic() + timeout
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        for thread in self.threads:
            thread.join(max(deadline - time.monotonic(), 0))
        return not any(thread.is_alive() for thread in self.threads)
