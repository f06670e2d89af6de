"""A poll's one update: recorded already claimed by the idle worker that handles it
(``polling.BotPoller._record``, ``lanes.ChatPool.submit_direct``), no recorder and no
claim of its own in between. Real poller, pool and recorder threads against the Bot
API double and real PostgreSQL."""

from __future__ import annotations

import gc
from contextlib import contextmanager

import pytest
from django.db import OperationalError, connection

from botplatform.locks import JOURNAL_CLAIM_NAMESPACE
from botplatform.models import TelegramUpdate
from botplatform.telegram import polling
from botplatform.telegram.batch import update_record_polled
from botplatform.telegram.dispatch import claim_key, update_run
from botplatform.telegram.lanes import ChatPool, DirectJob, UpdateJob
from botplatform.telegram.polling import BotPoller, Recorder
from tests.botplatform.telegram.test_quarantine import _Poller as _QueuePoller
from tests.botplatform.telegram.test_quarantine import _wait
from tests.users.helpers import other_connection

Status = TelegramUpdate.Status

pytestmark = pytest.mark.usefixtures("echo_handler")


class _CountingRecorder(Recorder):
    """The runner's recorder, counting the batches it writes."""

    def __init__(self) -> None:
        super().__init__(1)
        self.batches: list[int] = []

    def record(self, *, bot_id: int, updates: list) -> list[TelegramUpdate]:
        self.batches.append(len(updates))
        return super().record(bot_id=bot_id, updates=updates)


@contextmanager
def _polling(bot, settings):
    """A poller of ``bot`` with a pool of two workers and a recorder, as runbot has."""
    settings.TELEGRAM_POLL_TIMEOUT = 1
    pool = ChatPool(2, per_bot=True)
    recorder = _CountingRecorder()
    poller = BotPoller(bot_id=bot.pk, pool=pool, recorder=recorder)
    poller.start()
    try:
        yield pool, recorder, poller
    finally:
        poller.stop()
        poller.join(10)
        assert pool.drain(10)
        recorder.shutdown()
        gc.collect()  # the finished threads' database connections close with them


def _settled(pool: ChatPool, poller: BotPoller) -> bool:
    return poller.inflight == 0 and pool.idle == len(pool.threads)


@pytest.mark.django_db(transaction=True)
def test_a_polls_one_update_is_recorded_by_the_worker_that_handles_it(double, tg_bot, settings):
    for n in range(3):  # waiting before the poller starts: its first poll returns three
        double.message(tg_bot.token, 700 + n, f"early {n}")
    with _polling(tg_bot, settings) as (pool, recorder, poller):
        assert _wait(lambda: all(double.sent_texts(tg_bot.token, 700 + n) for n in range(3)))
        assert _wait(lambda: _settled(pool, poller))
        double.message(tg_bot.token, 710, "lone")
        assert _wait(lambda: double.sent_texts(tg_bot.token, 710) == ["echo:lone"])
        assert _wait(lambda: _settled(pool, poller))

    assert recorder.batches == [3]  # the lone update never went through the recorder
    rows = TelegramUpdate.objects.filter(bot=tg_bot)
    assert {(r.status, r.attempts, r.stalls, r.claimed_at) for r in rows} == {
        (Status.DONE, 1, 0, None)
    }
    assert rows.count() == 4
    assert double.sent_texts(tg_bot.token, 700) == ["echo:early 0"]


@pytest.mark.django_db(transaction=True)
def test_a_direct_recording_that_fails_goes_through_the_recorder_and_loses_nothing(
    double, tg_bot, settings, monkeypatch
):
    failures: list[int] = []

    def failing(**kwargs):
        failures.append(1)
        raise OperationalError("the server closed the connection unexpectedly")

    monkeypatch.setattr(polling, "update_record_polled", failing)
    with _polling(tg_bot, settings) as (pool, recorder, poller):
        assert _wait(lambda: _settled(pool, poller))
        double.message(tg_bot.token, 720, "fallback")
        assert _wait(lambda: double.sent_texts(tg_bot.token, 720) == ["echo:fallback"])
        assert _wait(lambda: _settled(pool, poller))

    assert failures == [1]
    assert recorder.batches == [1]
    row = TelegramUpdate.objects.get(bot=tg_bot)
    assert (row.status, row.attempts, row.stalls) == (Status.DONE, 1, 0)


@pytest.mark.django_db(transaction=True)
def test_a_redelivered_update_is_handled_once(double, tg_bot, settings):
    """The update was recorded before (the offset had not moved when the runner
    stopped): the worker finds its open row, not claimed, and the poller queues it as
    it queues a recorded batch's."""
    update = double.message(tg_bot.token, 730, "again")
    left, row = update_record_polled(bot_id=tg_bot.pk, update=update)
    assert (left, row.attempts) == ([], 1)
    connection.close()  # the runner stopped before handling it: its claim is gone
    again, claimed = update_record_polled(bot_id=tg_bot.pk, update=update)
    assert ([r.pk for r in again], claimed) == ([row.pk], None)

    with _polling(tg_bot, settings) as (pool, _recorder, poller):
        assert _wait(lambda: double.sent_texts(tg_bot.token, 730) == ["echo:again"])
        assert _wait(lambda: _settled(pool, poller))
    row.refresh_from_db()
    assert (row.status, row.stalls) == (Status.DONE, 1)  # the stopped attempt counted
    assert double.sent_texts(tg_bot.token, 730) == ["echo:again"]


@pytest.mark.django_db(transaction=True)
def test_a_directly_recorded_update_is_claimed_and_stamped_from_its_first_commit(double, tg_bot):
    """The row is inserted with its claim (the connection's lock) and its attempt and
    stamp, in one committed statement: another runner cannot take it, and a worker
    dying during it leaves a stall that update_run counts (docs/reliability.md)."""
    left, row = update_record_polled(
        bot_id=tg_bot.pk, update=double.message(tg_bot.token, 740, "mine")
    )
    assert left == []
    with other_connection() as other, other.cursor() as cursor:
        cursor.execute(
            "SELECT attempts, claimed_at IS NOT NULL, pg_try_advisory_lock(%s, %s)"
            " FROM botplatform_telegramupdate WHERE id = %s",
            [JOURNAL_CLAIM_NAMESPACE, claim_key(row.pk), row.pk],
        )
        assert cursor.fetchone() == (1, True, False)  # committed, and claimed here
    connection.close()  # the worker dies before handling it
    assert update_run(update_pk=row.pk) == "done"
    row.refresh_from_db()
    assert (row.status, row.attempts, row.stalls) == (Status.DONE, 2, 1)
    assert double.sent_texts(tg_bot.token, 740) == ["echo:mine"]


class _Poller(_QueuePoller):
    """The quarantine tests' stand-in (pk 1 blocks), taking direct jobs too."""

    def _run_direct(self, job: DirectJob) -> None:
        self.ran.append(job.update)
        job.recorded([])


def test_the_pool_takes_a_direct_update_only_when_the_bot_has_nothing_ahead_of_it():
    pool = ChatPool(2, per_bot=True)
    poller, other = _Poller(1), _Poller(2)
    try:
        assert _wait(lambda: pool.idle == 2)
        job = DirectJob(poller, "u1")
        assert pool.submit_direct(poller, job)
        assert job.wait(5) == [] and poller.ran == ["u1"]

        pool.submit(1, 10, UpdateJob(poller, 1, 10))  # holds the bot's lane
        assert _wait(lambda: poller.ran == ["u1", 1])
        # An earlier update of the bot is running: the new one must come after it.
        assert not pool.submit_direct(poller, DirectJob(poller, "u2"))
        # Another bot's update goes to the free worker.
        assert _wait(lambda: pool.idle == 1)
        assert pool.submit_direct(other, DirectJob(other, "v1"))
        assert _wait(lambda: other.ran == ["v1"])

        other.release.clear()
        pool.submit(2, 20, UpdateJob(other, 1, 20))  # both workers busy now
        assert _wait(lambda: pool.idle == 0)
        assert not pool.submit_direct(_Poller(3), DirectJob(_Poller(3), "w1"))  # no one free
    finally:
        poller.release.set()
        other.release.set()
        assert pool.drain(10)
    assert not pool.submit_direct(poller, DirectJob(poller, "late"))  # closing


def test_without_bot_lanes_the_pool_never_takes_a_direct_update():
    """With batch handling off each chat has its own lane, and updates run one by
    one through ``update_run``: every update goes through the recorder."""
    pool = ChatPool(1, per_bot=False)
    try:
        assert _wait(lambda: pool.idle == 1)
        assert not pool.submit_direct(_Poller(1), DirectJob(_Poller(1), "u"))
    finally:
        assert pool.drain(5)
