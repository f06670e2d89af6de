"""The long-polling runner behind ``manage.py runbot``.

We own the loop instead of using pyTelegramBotAPI's ``infinity_polling``: that loop
moves the offset before its handlers run (a crash loses the batch) and its thread pool
reorders one chat's updates. Here, per bot, a :class:`BotPoller` thread calls
``getUpdates``, records the batch (``journal.updates_record``; a poll's one update is
recorded already claimed by the idle worker that then handles it,
:meth:`BotPoller._record`) and only then moves the offset; a ``lanes.ChatPool`` runs updates in lanes (a bot's, or a chat's), so a
chat's updates run in order, different lanes in parallel, and one held lane never
holds the others. Each update's handler runs under a time budget
(``telegram/budget.py``), and a frozen process exits for its supervisor to restart.
A :class:`Runner` holds a Redis lease per bot (``leases``), renews them all with one
runner key, takes its share of the bots with ``--all``, and shuts down cleanly on SIGTERM / Ctrl-C.
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
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections, connection
from telebot import apihelper

from botplatform.bots import bots_changed_read
from botplatform.models import Bot, TelegramUpdate
from botplatform.periodic import InProcessBeat, TimerLoop
from botplatform.telegram import budget, leases
from botplatform.telegram.batch import update_record_polled, updates_run_batch
from botplatform.telegram.botstatus import bot_mark_unauthorized, bot_status_set
from botplatform.telegram.client import api, error_classify
from botplatform.telegram.dispatch import update_run
from botplatform.telegram.journal import (
    update_offset_next,
    update_record_unreadable,
    updates_open,
    updates_record,
)
from botplatform.telegram.lanes import BATCH_MAX, ChatPool, DirectJob, UpdateJob
from botplatform.telegram.sender import BotUnauthorized
from botplatform.telegram.updates import ALLOWED_UPDATES, update_id_get

logger = logging.getLogger(__name__)


# s a poller waits for a worker to record its one update before it records the update
# through the recorder instead (the worker was idle when it took the job: normally
# milliseconds; a stalled database makes the recorder wait too)
DIRECT_RECORD_TIMEOUT = 30.0


def _redis_outage(exc: BaseException) -> bool:
    """Redis unreachable (the breaker logs that once), as opposed to a real error."""
    from botplatform.cache_backend import REDIS_DOWN

    return isinstance(exc, REDIS_DOWN)


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

    def _record(self, updates: list) -> list[TelegramUpdate]:
        """Record a poll's updates; returns the rows to queue.

        One update goes to an idle worker when there is one (``ChatPool.submit_direct``):
        it records the update already claimed and handles it on the same connection,
        which saves the recorder's hand-over and the claim's own statement and
        transaction. The poller still waits for the recording (a synchronous commit)
        before it moves the offset. Anything else, or a direct recording that failed,
        goes through the recorder.
        """
        if len(updates) == 1:
            job = DirectJob(self, updates[0])
            if self.pool.submit_direct(self, job):
                try:
                    return job.wait(DIRECT_RECORD_TIMEOUT)
                except Exception as exc:
                    logger.info("Bot %s: recording through the recorder (%s)", self.bot_id, exc)
        return self.recorder.record(bot_id=self.bot_id, updates=updates)

    def _run_direct(self, job: DirectJob) -> None:
        """A :class:`DirectJob` in a worker: record (claimed), tell the poller, handle."""
        try:
            left, row = update_record_polled(bot_id=self.bot_id, update=job.update)
        except Exception as exc:
            close_old_connections()  # a broken connection is replaced before the next job
            job.failed(exc)
            return
        if row is None:
            job.recorded(left)
            return
        with self._lock:
            self._queued.add(row.pk)  # before the poller goes on: inflight counts it
        with self.pool.cond:
            job.chats = {row.chat_id or row.pk}  # the chat keeps the lane on a detour
        job.recorded(left)
        self._run_batch([row], claimed=True)

    def _run_batch(self, rows: list[TelegramUpdate], *, claimed: bool = False) -> None:
        leftovers = [row.pk for row in rows]
        try:
            leftovers = updates_run_batch(bot_id=self.bot_id, rows=rows, claimed=claimed).leftovers
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
                rows = self._record(updates)
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
        # Wait timeouts and delays within about a second (botplatform/periodic.py).
        self.timers = TimerLoop()
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
        if self.timers.enabled:
            threading.Thread(
                target=self.timers.run, args=(self.stop_event,), name="timers", daemon=True
            ).start()
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
        """Keep this runner's key alive and check its bots' leases: one round trip.

        Bots being handed over (``releasing``) stay ours with the runner key until
        their queued updates are done; they need nothing more.
        """
        now = time.monotonic()
        renewed: dict[int, bool] = {}
        try:
            renewed = leases.leases_renew(
                holder=self.holder, bot_ids=list(self.pollers), ttl_ms=self.ttl_ms
            )
        except Exception as exc:
            if _redis_outage(exc):
                # Redis is down for every runner, so nobody can take a lease over: keep
                # polling (the journal dedupes; Telegram 409s a second poller).
                for poller in self.pollers.values():
                    poller.lease_deadline = now + settings.TELEGRAM_LEASE_TTL
                return
            logger.warning("Lease renewal failed: %s", exc)
        for bot_id, poller in list(self.pollers.items()):
            held = renewed.get(bot_id)
            if held:
                poller.lease_deadline = now + settings.TELEGRAM_LEASE_TTL
            elif held is False or now > poller.lease_deadline:
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
