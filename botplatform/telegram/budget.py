"""A time budget per update, enforced by a watchdog thread, and a last resort.

One update must never hold a runner: a handler that loops for minutes (a pathological
input, a bug) would stop its bot, and every bot that shares the process. So the
handling of each update (the handler and its transaction, not the delivery of the
replies, whose waits are Telegram's rate limits) runs under :class:`update_budget`.

- The :class:`Watchdog` thread looks at every armed budget ten times a second. When
  one has run for ``TELEGRAM_UPDATE_BUDGET`` seconds, it raises :class:`_Stop` in
  that worker thread (``PyThreadState_SetAsyncExc``). It is a ``BaseException``, so
  handler code that catches ``Exception`` cannot swallow it; the transaction rolls
  back and ``update_budget`` turns it into :class:`UpdateBudgetExceeded`, which
  quarantines the update (``dispatch.update_quarantine``).
- Python delivers that exception only between bytecodes. Code that holds the GIL in
  C (a catastrophic ``re`` match, a huge ``int`` conversion) never gets it, and no
  Python thread runs at all meanwhile, the watchdog included. For that, a heartbeat
  thread re-arms ``faulthandler.dump_traceback_later(TELEGRAM_FREEZE_EXIT,
  exit=True)`` every second: faulthandler's timer is a C thread that needs no GIL.
  If the heartbeat has not run for that long, it writes every thread's traceback to
  stderr and exits the process; its supervisor (docker compose's restart policy)
  starts it again, and the claim the update left behind quarantines it
  (``dispatch``).
- An update that got the exception but still has not stopped ``TELEGRAM_FREEZE_EXIT``
  seconds later (blocked in a C call that releases the GIL, or catching
  ``BaseException``) ends the process the same way: a thread cannot be killed, and
  only the end of its connection frees the row lock and claim it holds.
"""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from types import TracebackType

from django.conf import settings

logger = logging.getLogger(__name__)

FREEZE_EXIT_CODE = 70  # EX_SOFTWARE; faulthandler's own exit is 1
TICK = 0.1  # s between the watchdog's looks


class _Stop(BaseException):
    """Raised asynchronously in a worker thread whose update ran out of time."""


class UpdateBudgetExceeded(BaseException):
    """An update ran past its budget and was stopped; ``update_pk`` is the culprit."""

    def __init__(self, update_pk: int | None, seconds: float) -> None:
        super().__init__(f"took longer than {seconds:g} s (the update budget)")
        self.update_pk = update_pk
        self.seconds = seconds


@dataclass
class _Watch:
    update_pk: int | None
    deadline: float
    fired_at: float | None = None


def _async_raise(ident: int, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` in thread ``ident`` at its next bytecode (None: cancel a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc) if exc is not None else None
    )


class Watchdog:
    """The budgets armed by worker threads, and the thread that enforces them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.armed: dict[int, _Watch] = {}
        self.running = False

    @property
    def seconds(self) -> float:
        return float(settings.TELEGRAM_UPDATE_BUDGET)

    def arm(self, update_pk: int | None) -> _Watch:
        watch = _Watch(update_pk, time.monotonic() + self.seconds)
        with self.lock:
            self.armed[threading.get_ident()] = watch
        return watch

    def disarm(self) -> _Watch | None:
        """Stop watching this thread; cancels a stop the watchdog raised too late."""
        with self.lock:
            watch = self.armed.pop(threading.get_ident(), None)
        if watch is not None and watch.fired_at is not None:
            _async_raise(threading.get_ident(), None)
        return watch

    def start(self) -> None:
        """Start enforcing (``runbot`` only: a web or Celery process never stops a thread)."""
        if not self.running:
            self.running = True
            threading.Thread(target=self._loop, name="update-watchdog", daemon=True).start()

    def _loop(self) -> None:
        while True:
            time.sleep(TICK)
            try:
                self.check()
            except Exception:
                logger.exception("Update watchdog: check failed")

    def check(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        grace = float(settings.TELEGRAM_FREEZE_EXIT)
        with self.lock:
            for ident, watch in self.armed.items():
                if watch.fired_at is None and now >= watch.deadline:
                    watch.fired_at = now
                    logger.warning(
                        "Update row %s ran past its budget (%g s): stopping it",
                        watch.update_pk,
                        self.seconds,
                    )
                    _async_raise(ident, _Stop)
                elif watch.fired_at is not None and now - watch.fired_at >= grace:
                    freeze_exit(
                        f"update row {watch.update_pk} did not stop {grace:g} s after its "
                        "budget ran out"
                    )


WATCHDOG = Watchdog()
STOPS = (UpdateBudgetExceeded, _Stop)  # what a worker loop must catch besides Exception


class update_budget:
    """Run the block under the update budget; raises UpdateBudgetExceeded when stopped.

    Once the watchdog has fired for this block, leaving it always raises
    UpdateBudgetExceeded, even if the block finished just as the stop arrived (the
    pending stop is cancelled), so the caller never sees half of a stop.
    """

    def __init__(self, update_pk: int | None) -> None:
        self.update_pk = update_pk

    def __enter__(self) -> None:
        WATCHDOG.arm(self.update_pk)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            watch = WATCHDOG.disarm()
        except _Stop:  # the stop landed here, after the block: it is still this block's
            watch, exc = None, _Stop()
        stopped = isinstance(exc, _Stop) or (watch is not None and watch.fired_at is not None)
        if stopped:
            raise UpdateBudgetExceeded(self.update_pk, WATCHDOG.seconds) from None


def forget() -> None:
    """A worker between jobs: no budget is armed, no stop may be pending."""
    WATCHDOG.disarm()


# --- The last resort: the interpreter itself is frozen -----------------------------------


def freeze_exit(reason: str) -> None:
    """Dump every thread's traceback and end the process now (its supervisor restarts it)."""
    logger.critical("Runner stuck: %s. Exiting; the supervisor restarts it.", reason)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()
    os._exit(FREEZE_EXIT_CODE)


class Heartbeat:
    """Re-arms faulthandler's exit timer while Python threads still get to run."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        timeout = float(settings.TELEGRAM_FREEZE_EXIT)
        interval = min(1.0, timeout / 4)

        def beat() -> None:
            while not self.stopped.is_set():
                faulthandler.dump_traceback_later(timeout, exit=True, file=sys.stderr)
                self.stopped.wait(interval)
            faulthandler.cancel_dump_traceback_later()

        self.thread = threading.Thread(target=beat, name="freeze-heartbeat", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join(5)
