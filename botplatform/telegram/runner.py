"""The long-polling runner behind ``manage.py runbot``.

We own the loop instead of using pyTelegramBotAPI's ``infinity_polling``: that loop
moves the offset before its handlers run (a crash loses the batch) and its thread pool
reorders one chat's updates. Here, per bot, a :class:`BotPoller` thread calls
``getUpdates``, records the batch (``dispatch.updates_record``) and only then moves
the offset; a :class:`ChatPool` runs updates in lanes (a bot's, or a chat's), so a
chat's updates run in order, different lanes in parallel, and one held lane never
holds the others. Each update's handler runs under a time budget
(``telegram/budget.py``), and a frozen process exits for its supervisor to restart.
A :class:`Runner` holds a Redis lease per bot (``leases``), renews it, takes its
share of the bots with ``--all``, and shuts down cleanly on SIGTERM / Ctrl-C.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import os
import random
import re
import signal
import socket
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections, connection
from telebot import apihelper

from botplatform.bots import bots_changed_read
from botplatform.models import Bot, TelegramUpdate
from botplatform.periodic import InProcessBeat
from botplatform.telegram import budget, leases
from botplatform.telegram.batch import updates_run_batch
from botplatform.telegram.client import api, error_classify
from botplatform.telegram.dispatch import (
    bot_mark_unauthorized,
    bot_status_set,
    update_offset_next,
    update_record_unreadable,
    update_run,
    updates_open,
    updates_record,
)
from botplatform.telegram.sender import BotUnauthorized
from botplatform.telegram.updates import ALLOWED_UPDATES, update_id_get

logger = logging.getLogger("botplatform.telegram.runner")


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


def _redis_outage(exc: BaseException) -> bool:
    """Redis unreachable (the breaker logs that once), as opposed to a real error."""
    from botplatform.cache_backend import REDIS_DOWN

    return isinstance(exc, REDIS_DOWN)


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
                    self.cond.wait()
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
                    idle = not self.ready
                check(force=failed or idle)  # idle or failed: tidy up now

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


class Recorder:
    """A few threads that write every poller's ``getUpdates`` batches to the journal.

    Pollers spend their lives in long polls. If each kept a database connection, a
    runner polling 100 bots would hold 100 connections, PostgreSQL's default maximum.
    So pollers hand the write to these threads and wait for it (the offset still
    moves only once the batch is recorded), and close their own connection after
    their rare queries (start-up, bot status).
    """

    def __init__(self, size: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=max(size, 1), thread_name_prefix="recorder")

    def record(self, *, bot_id: int, updates: list) -> list[TelegramUpdate]:
        return self.executor.submit(self._record, bot_id, updates).result()

    def skip_unreadable(self, *, bot_id: int, update_id: int, reason: str) -> None:
        """Record an update whose answer could not be read as skipped (see BotPoller)."""
        self.executor.submit(self._skip, bot_id, update_id, reason).result()

    @staticmethod
    def _record(bot_id: int, updates: list) -> list[TelegramUpdate]:
        try:
            return updates_record(bot_id=bot_id, updates=updates)
        except Exception:
            close_old_connections()  # a broken connection is replaced before the next batch
            raise

    @staticmethod
    def _skip(bot_id: int, update_id: int, reason: str) -> None:
        try:
            update_record_unreadable(bot_id=bot_id, update_id=update_id, reason=reason)
        except Exception:
            close_old_connections()
            raise

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)


class BotPoller(threading.Thread):
    """Polls one bot: getUpdates -> record -> move offset -> queue per chat."""

    def __init__(
        self,
        *,
        bot_id: int,
        pool: ChatPool,
        recorder: Recorder,
        skip_unauthorized: bool = False,
    ) -> None:
        super().__init__(name=f"poller-{bot_id}", daemon=True)
        self.bot_id = bot_id
        self.skip_unauthorized = skip_unauthorized
        self.pool = pool
        self.recorder = recorder
        self.stopping = threading.Event()
        self.unauthorized = False
        self.lease_deadline = time.monotonic() + settings.TELEGRAM_LEASE_TTL
        self._lock = threading.Lock()
        self._queued: set[int] = set()

    @property
    def inflight(self) -> int:
        with self._lock:
            return len(self._queued)

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        try:
            self._poll()
        except Exception:
            logger.exception("Bot %s: poller crashed", self.bot_id)
        finally:
            connection.close()

    def _submit(self, pk: int, chat_id: int | None) -> None:
        with self._lock:
            if pk in self._queued:
                return
            self._queued.add(pk)
        self.pool.submit(self.bot_id, chat_id or pk, UpdateJob(self, pk, chat_id or pk))

    def _submit_batch(self, rows: list[TelegramUpdate]) -> None:
        """Fresh rows: one job per lane, its rows handled as one batch.

        ``updates_run_batch`` hands back what it could not take, which then runs one
        by one.
        """
        with self._lock:
            fresh = [row for row in rows if row.pk not in self._queued]
            self._queued.update(row.pk for row in fresh)
        if fresh:
            self.pool.submit_batch(self, fresh)

    def _run_batch(self, rows: list[TelegramUpdate]) -> None:
        leftovers = [row.pk for row in rows]
        try:
            leftovers = updates_run_batch(bot_id=self.bot_id, rows=rows).leftovers
        except BotUnauthorized:
            self.unauthorized = True
            self.stop()
        except Exception:
            logger.exception("Bot %s: a batch could not be processed", self.bot_id)
        finally:
            done = {row.pk for row in rows} - set(leftovers)
            with self._lock:
                self._queued -= done
        for pk in leftovers:
            self._run_update(pk)  # keeps the chat's order; frees its own pk

    def _run_update(self, pk: int) -> None:
        """Handle one update; on a transient failure retry, keeping the chat's order."""
        delay = 0.5
        try:
            while True:
                try:
                    result = update_run(update_pk=pk)
                except BotUnauthorized:
                    self.unauthorized = True
                    self.stop()
                    return
                except Exception:
                    logger.exception(
                        "Bot %s: update row %s could not be processed", self.bot_id, pk
                    )
                    result = "retry"
                if result == "done" or self.pool.draining.is_set() or self.unauthorized:
                    return
                if self.stopping.is_set() and result == "busy":
                    return  # another runner holds it now
                close_old_connections()  # a broken connection is replaced before the retry
                time.sleep(delay)
                delay = min(delay * 2, 10)
        finally:
            with self._lock:
                self._queued.discard(pk)

    def _poll(self) -> None:
        bot = Bot.objects.get(pk=self.bot_id)
        if self.skip_unauthorized and bot.status == Bot.Status.UNAUTHORIZED:
            self.unauthorized = True  # marked by another runner since discovery
            return
        token = bot.token
        for row in updates_open(bot_id=self.bot_id):
            self._submit(row.pk, row.chat_id)
        offset = update_offset_next(bot_id=self.bot_id)
        connection.close()  # the batches are written by the recorder (see Recorder)
        backoff = 1.0
        marked_ok = False
        narrow = 0  # after an unreadable answer: read this many updates one at a time
        logger.info("Bot %s (%s): polling from offset %s", self.bot_id, bot, offset)
        while not self.stopping.is_set():
            limit = 1 if narrow else BATCH_MAX
            try:
                updates = api().get_updates(
                    token,
                    offset=offset,
                    limit=limit,
                    long_polling_timeout=settings.TELEGRAM_POLL_TIMEOUT,
                    allowed_updates=ALLOWED_UPDATES,
                )
            except Exception as exc:
                if isinstance(exc, apihelper.ApiInvalidJSONException):
                    if limit > 1:
                        logger.warning(
                            "Bot %s: getUpdates answered JSON that cannot be read; reading "
                            "updates one at a time to find the one that breaks it",
                            self.bot_id,
                        )
                        narrow = limit
                        continue
                    skipped = self._unreadable_skip(exc, offset)
                    if skipped is not None:
                        offset, narrow = skipped + 1, 0
                        continue
                error = error_classify(exc)
                if error.kind == "unauthorized":
                    bot_mark_unauthorized(bot=bot, description=error.description)
                    self.unauthorized = True
                    return  # run() closes the connection
                if error.kind == "retry_after":
                    wait = error.retry_after
                else:
                    wait = backoff * random.uniform(0.8, 1.2)
                    backoff = min(backoff * 2, settings.TELEGRAM_BACKOFF_MAX)
                if error.kind == "conflict":
                    bot_status_set(
                        bot_id=self.bot_id,
                        status=Bot.Status.ERROR,
                        message=f"Telegram refused polling (409): {error.description}",
                    )
                    connection.close()
                    marked_ok = False
                logger.warning(
                    "Bot %s: getUpdates failed (%s %s: %s); retrying in %.1fs",
                    self.bot_id,
                    error.kind,
                    error.code or "",
                    error.description,
                    wait,
                )
                self.stopping.wait(wait)
                continue
            backoff = 1.0
            if not marked_ok:
                bot_status_set(bot_id=self.bot_id, status=Bot.Status.OK)
                connection.close()
                marked_ok = True
            if not updates or self.stopping.is_set():
                continue  # when stopping, the offset does not move: Telegram keeps them
            try:
                if not isinstance(updates, list):
                    raise TypeError(f"getUpdates returned a {type(updates).__name__}, not a list")
                rows = self.recorder.record(bot_id=self.bot_id, updates=updates)
            except Exception as exc:
                # Not recorded, so the offset stays: Telegram hands the batch out again.
                logger.warning("Bot %s: could not record updates (%s); retrying", self.bot_id, exc)
                self.stopping.wait(min(backoff, settings.TELEGRAM_BACKOFF_MAX))
                backoff = min(backoff * 2, settings.TELEGRAM_BACKOFF_MAX)
                continue
            ids = [i for i in map(update_id_get, updates) if i is not None]
            if not ids:
                # Nothing to confirm them with: Telegram hands them out again. Back off
                # instead of asking for them in a tight loop.
                logger.error(
                    "Bot %s: getUpdates handed out %s updates without a usable update_id; "
                    "they cannot be confirmed (retrying in %.0fs)",
                    self.bot_id,
                    len(updates),
                    backoff,
                )
                self.stopping.wait(backoff)
                continue
            offset = max(ids) + 1
            narrow = max(narrow - len(updates), 0)
            self._submit_batch(rows)

    def _unreadable_skip(self, exc: Exception, offset: int | None) -> int | None:
        """One update's answer (``limit=1``) cannot be read as JSON (nested too deep for
        the parser, a number of thousands of digits): find its update_id in the raw
        text, record it as skipped, and return it. None when that is not possible
        (then the poller backs off as after any failed call)."""
        content = getattr(getattr(exc, "result", None), "content", None) or b""
        match = _FIRST_UPDATE_ID.search(content)
        update_id = int(match.group(1)) if match else None
        if update_id is None or update_id_get({"update_id": update_id}) is None:
            logger.error("Bot %s: unreadable getUpdates answer without an update_id", self.bot_id)
            return None
        if offset is not None and update_id < offset:
            return None
        try:
            json.loads(content)
            cause = "unknown"
        except Exception as error:  # the parser's reason, as telebot swallowed it
            cause = f"{type(error).__name__}: {error}"[:200]
        try:
            self.recorder.skip_unreadable(
                bot_id=self.bot_id,
                update_id=update_id,
                reason=f"Telegram's answer for it could not be read ({cause})",
            )
        except Exception as error:
            logger.warning("Bot %s: could not record a skipped update (%s)", self.bot_id, error)
            return None
        return update_id


# The first update_id of a getUpdates answer, in its raw text ({"ok":true,"result":[{
# "update_id":N,...): Telegram writes it first. Inside a string a quote is escaped,
# so user text cannot fake it.
_FIRST_UPDATE_ID = re.compile(rb'"result"\s*:\s*\[\s*\{\s*"update_id"\s*:\s*([0-9]{1,19})(?![0-9])')


class Runner:
    """Holds leases, runs one poller per held bot, shuts down cleanly."""

    def __init__(self, *, bot_ids: list[int] | None) -> None:
        self.all_bots = bot_ids is None
        self.bot_ids = bot_ids or []
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stop_event = threading.Event()
        self.pool = ChatPool(
            settings.TELEGRAM_CHAT_WORKERS, per_bot=settings.TELEGRAM_BATCH_HANDLING
        )
        self.recorder = Recorder(settings.TELEGRAM_RECORDERS)
        self.pollers: dict[int, BotPoller] = {}
        self.releasing: dict[int, tuple[BotPoller, bool]] = {}
        self.given_up: set[int] = set()
        self.poller_tokens: dict[int, str] = {}  # token fingerprint each poller started with
        self.bots_version: int | None = None  # last "bots changed" counter seen
        self.restarting: set[int] = set()  # stopped for a new token, to start again
        self.ttl_ms = settings.TELEGRAM_LEASE_TTL * 1000
        # No broker means no Celery beat either (the embedded default): this process
        # runs the periodic sweeps, or delays and timeouts would never come due.
        self.beat = InProcessBeat() if settings.CELERY_TASK_ALWAYS_EAGER else None
        self.heartbeat = budget.Heartbeat()

    # --- signals -----------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def _stop(signum, frame) -> None:
            logger.info("Received %s: finishing in-flight updates", signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)

    # --- loop ----------------------------------------------------------------------------

    def run(self) -> int:
        # Everything loaded so far (Django, models, settings) lives as long as the
        # process: keep it out of the garbage collector's full passes, whose pauses
        # otherwise land on whichever update is being handled.
        gc.freeze()
        logger.info(
            "Runner %s started (%s)", self.holder, "all bots" if self.all_bots else self.bot_ids
        )
        tick = max(settings.TELEGRAM_LEASE_TTL / 3, 0.2)
        next_discovery = 0.0
        discover_now = False
        # A runaway update is stopped by the watchdog; a frozen interpreter ends the
        # process by the heartbeat's timer (see telegram/budget.py).
        budget.WATCHDOG.start()
        self.heartbeat.start()
        if self.beat is not None:
            threading.Thread(target=self._beat_loop, name="beat", daemon=True).start()
        while not self.stop_event.is_set():
            close_old_connections()
            try:
                self._renew()
                if discover_now or time.monotonic() >= next_discovery:
                    self._discover()
                    next_discovery = time.monotonic() + settings.TELEGRAM_DISCOVERY_INTERVAL
                self._reap()
            except Exception as exc:
                if _redis_outage(exc):  # logged once by the breaker; keep the bots we hold
                    logger.debug("Runner loop: Redis unreachable (%s); retrying", exc)
                else:
                    logger.exception("Runner loop error; retrying")
            if not self.all_bots and self.given_up >= set(self.bot_ids):
                logger.error("No bot left to poll (see the bots' status); exiting")
                self._shutdown()
                return 1
            discover_now = self._pause(tick)
        self._shutdown()
        return 0

    def _pause(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True at once when the bots changed (discover now).

        The "bots changed" counter (botplatform.bots) is one Redis GET a second: a bot
        added, re-activated or deactivated in the admin is picked up or dropped within
        about a second, without a full discovery query every second.
        """
        deadline = time.monotonic() + seconds
        while not self.stop_event.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.stop_event.wait(min(remaining, 1.0))
            if self._bots_changed():
                return True
        return False

    def _bots_changed(self) -> bool:
        if self.restarting and not self.restarting & set(self.releasing):
            self.restarting.clear()  # their old pollers are gone: start new ones
            return True
        version = bots_changed_read()
        if version is None or version == self.bots_version:
            return False
        self.bots_version = version
        return True

    def _beat_loop(self) -> None:
        """The periodic sweeps, in their own thread: a long one never delays renewals."""
        while not self.stop_event.wait(1.0):
            close_old_connections()
            self.beat.run_due()
        close_old_connections()

    def _renew(self) -> None:
        now = time.monotonic()
        # Bots being handed over stay ours until their queued updates are done.
        for bot_id, (_poller, release) in list(self.releasing.items()):
            if release:
                try:
                    leases.lease_renew(bot_id=bot_id, holder=self.holder, ttl_ms=self.ttl_ms)
                except Exception as exc:
                    logger.warning("Bot %s: lease renewal failed: %s", bot_id, exc)
        for bot_id, poller in list(self.pollers.items()):
            try:
                renewed = leases.lease_renew(
                    bot_id=bot_id, holder=self.holder, ttl_ms=self.ttl_ms
                ) or leases.lease_acquire(bot_id=bot_id, holder=self.holder, ttl_ms=self.ttl_ms)
            except Exception as exc:
                renewed = None
                if _redis_outage(exc):
                    # Redis is down for every runner, so nobody can take the lease over:
                    # keep polling (the journal dedupes; Telegram 409s a second poller).
                    poller.lease_deadline = now + settings.TELEGRAM_LEASE_TTL
                else:
                    logger.warning("Bot %s: lease renewal failed: %s", bot_id, exc)
            if renewed:
                poller.lease_deadline = now + settings.TELEGRAM_LEASE_TTL
            elif renewed is False or now > poller.lease_deadline:
                logger.warning("Bot %s: lease lost; stopping its poller", bot_id)
                self._poller_stop(bot_id, release=False)

    def _wanted(self) -> dict[int, str]:
        """The bots this runner should poll, each with a fingerprint of its token.

        The fingerprint is a plain SHA-256 of the token, not the stored keyed hash: a
        key rotation rewrites every stored hash but must not restart every poller.
        """
        bots = Bot.objects.filter(is_active=True, project__is_active=True)
        if self.all_bots:
            bots = bots.filter(mode=Bot.Mode.POLLING).exclude(status=Bot.Status.UNAUTHORIZED)
        else:
            bots = bots.filter(pk__in=self.bot_ids)
        wanted = {
            pk: hashlib.sha256(token.encode()).hexdigest()
            for pk, token in bots.values_list("pk", "token")
        }
        # --all goes by the status (a fixed token resets it); named bots by this run.
        if not self.all_bots:
            for bot_id in self.given_up:
                wanted.pop(bot_id, None)
        return wanted

    def _discover(self) -> None:
        # Read before the query: a change committed after this read triggers another.
        self.bots_version = bots_changed_read()
        wanted = self._wanted()
        for bot_id in list(self.pollers):
            if bot_id not in wanted:
                logger.info("Bot %s is no longer active for polling; stopping it", bot_id)
                self._poller_stop(bot_id, release=True)
            elif wanted[bot_id] != self.poller_tokens.get(bot_id, wanted[bot_id]):
                # The poller holds the old token; the next discovery starts a fresh one.
                logger.info("Bot %s has a new token; restarting its poller", bot_id)
                self._poller_stop(bot_id, release=True)
                self.restarting.add(bot_id)
        target = len(wanted)
        if self.all_bots:
            alive = leases.runners_alive(holder=self.holder, ttl_ms=self.ttl_ms)
            target = math.ceil(len(wanted) / alive)
            for bot_id in sorted(self.pollers, reverse=True)[: max(len(self.pollers) - target, 0)]:
                logger.info("Bot %s: handing over to another runner (balancing)", bot_id)
                self._poller_stop(bot_id, release=True)
        candidates = [b for b in wanted if b not in self.pollers and b not in self.releasing]
        random.shuffle(candidates)
        for bot_id in candidates:
            if len(self.pollers) >= target:
                break
            try:
                acquired = leases.lease_acquire(
                    bot_id=bot_id, holder=self.holder, ttl_ms=self.ttl_ms
                )
            except Exception as exc:
                if self.all_bots or not _redis_outage(exc):
                    raise
                # A named bot with Redis down: poll it anyway (Telegram answers 409 to a
                # second poller); the lease is taken as soon as Redis answers.
                logger.warning("Bot %s: Redis unreachable; polling without a lease", bot_id)
                acquired = True
            if acquired:
                logger.info("Bot %s: lease acquired by %s", bot_id, self.holder)
                poller = BotPoller(
                    bot_id=bot_id,
                    pool=self.pool,
                    recorder=self.recorder,
                    skip_unauthorized=self.all_bots,
                )
                self.pollers[bot_id] = poller
                self.poller_tokens[bot_id] = wanted[bot_id]
                poller.start()
            elif not self.all_bots:
                logger.info("Bot %s is polled by another runner; waiting for its lease", bot_id)

    def _poller_stop(self, bot_id: int, *, release: bool) -> None:
        poller = self.pollers.pop(bot_id, None)
        if poller is not None:
            poller.stop()
            self.releasing[bot_id] = (poller, release)

    def _reap(self) -> None:
        for bot_id, poller in list(self.pollers.items()):
            if not poller.is_alive():
                if poller.unauthorized:
                    self.given_up.add(bot_id)
                self._poller_stop(bot_id, release=True)
        for bot_id, (poller, release) in list(self.releasing.items()):
            if poller.unauthorized:
                self.given_up.add(bot_id)
            if not poller.is_alive() and poller.inflight == 0:
                if release:
                    leases.lease_release(bot_id=bot_id, holder=self.holder)
                del self.releasing[bot_id]

    def _shutdown(self) -> None:
        for bot_id in list(self.pollers):
            self._poller_stop(bot_id, release=True)
        finished = self.pool.drain(settings.TELEGRAM_SHUTDOWN_GRACE)
        self.recorder.shutdown()
        if not finished:
            logger.warning("Shutdown grace over; unfinished updates resume on the next start")
        for bot_id, (_poller, release) in list(self.releasing.items()):
            if release:
                try:
                    leases.lease_release(bot_id=bot_id, holder=self.holder)
                except Exception as exc:
                    logger.warning("Bot %s: lease release failed: %s", bot_id, exc)
        try:
            leases.runner_leave(holder=self.holder)
        except Exception as exc:
            logger.warning("Runner heartbeat could not be removed: %s", exc)
        close_old_connections()
        self.heartbeat.stop()
        logger.info("Runner %s stopped", self.holder)
