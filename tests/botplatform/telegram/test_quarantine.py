"""Per-update budget and quarantine: one poison update never stops a runner.

In process: the budget stops a runaway handler (both paths), an update during which
the runner died twice is quarantined, and the pool routes a bot's other chats around
a held lane. As real ``runbot`` subprocesses against the Bot API double: a Python
loop, a GIL-holding freeze and two ``kill -9`` mid-handler, while other users of the
same bot and of another bot are answered.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.core.cache import cache

from botplatform.models import TelegramUpdate
from botplatform.telegram import budget
from botplatform.telegram.batch import updates_run_batch
from botplatform.telegram.dispatch import update_run
from botplatform.telegram.journal import update_offset_next, updates_open, updates_record
from botplatform.telegram.lanes import ChatPool, UpdateJob
from tests.botplatform.telegram.poison import Died
from tests.botplatform.telegram.test_runbot import Runbot
from tests.factories import bot_create

POISON = "tests.botplatform.telegram.poison.poison_handle"
Status = TelegramUpdate.Status


@pytest.fixture
def poison_handler(settings):
    settings.TELEGRAM_EVENT_HANDLER = POISON
    settings.TELEGRAM_UPDATE_BUDGET = 1


def _stop_when_looping(chat: int) -> threading.Thread:
    """Play the watchdog once the handler of ``chat`` loops: its budget is over."""
    target = threading.get_ident()

    def fire() -> None:
        deadline = time.monotonic() + 20
        while cache.get(f"test:poison:{chat}") is None and time.monotonic() < deadline:
            time.sleep(0.02)
        with budget.WATCHDOG.lock:
            assert target in budget.WATCHDOG.armed
        budget.WATCHDOG.check(now=time.monotonic() + 5)  # past the budget, not the grace

    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    return thread


@pytest.mark.usefixtures("poison_handler")
def test_a_handler_looping_past_its_budget_is_stopped_and_quarantined(double, tg_bot):
    (row,) = updates_record(bot_id=tg_bot.pk, updates=[double.message(tg_bot.token, 7001, "loop")])
    watchdog = _stop_when_looping(7001)

    assert update_run(update_pk=row.pk) == "done"  # returns at all: the loop was stopped

    watchdog.join(5)
    row.refresh_from_db()
    assert row.status == Status.QUARANTINED
    assert row.note == "quarantined: took longer than 1 s (the update budget)"
    assert row.claimed_at is None
    assert double.sent_texts(tg_bot.token) == [tg_bot.project.fallback_message]
    assert update_run(update_pk=row.pk) == "done"  # never run again
    assert updates_open(bot_id=tg_bot.pk) == []
    with budget.WATCHDOG.lock:
        assert threading.get_ident() not in budget.WATCHDOG.armed


@pytest.mark.usefixtures("poison_handler")
def test_a_batch_quarantines_only_the_looping_update_and_hands_back_the_rest(double, tg_bot):
    rows = updates_record(
        bot_id=tg_bot.pk,
        updates=[
            double.message(tg_bot.token, 7011, "before"),
            double.message(tg_bot.token, 7012, "loop"),
            double.message(tg_bot.token, 7013, "after"),
        ],
    )
    watchdog = _stop_when_looping(7012)

    result = updates_run_batch(bot_id=tg_bot.pk, rows=rows)

    watchdog.join(5)
    assert result.leftovers == [row.pk for row in rows]  # the wave rolled back
    for row in rows:
        assert update_run(update_pk=row.pk) == "done"
    statuses = dict(TelegramUpdate.objects.values_list("chat_id", "status"))
    assert statuses == {7011: Status.DONE, 7012: Status.QUARANTINED, 7013: Status.DONE}
    assert double.sent_texts(tg_bot.token, 7011) == ["echo:before"]
    assert double.sent_texts(tg_bot.token, 7012) == [tg_bot.project.fallback_message]
    assert double.sent_texts(tg_bot.token, 7013) == ["echo:after"]


@pytest.mark.usefixtures("poison_handler")
def test_an_update_the_runner_died_in_twice_is_quarantined_at_the_next_claim(
    double, tg_bot, settings
):
    settings.TELEGRAM_MAX_ATTEMPTS = 10  # it is not the handler-error rule that stops it
    (row,) = updates_record(bot_id=tg_bot.pk, updates=[double.message(tg_bot.token, 7021, "die")])
    offset = update_offset_next(bot_id=tg_bot.pk)
    for _ in range(2):
        with pytest.raises(Died):
            update_run(update_pk=row.pk)
        assert [r.pk for r in updates_open(bot_id=tg_bot.pk)] == [row.pk]

    assert update_run(update_pk=row.pk) == "done"

    row.refresh_from_db()
    assert row.status == Status.QUARANTINED
    assert row.note == "quarantined: the runner stopped while handling it 2 times"
    assert (row.attempts, row.stalls) == (3, 2)
    assert double.sent_texts(tg_bot.token) == [tg_bot.project.fallback_message]
    assert update_offset_next(bot_id=tg_bot.pk) == offset  # the offset never waited on it
    assert updates_open(bot_id=tg_bot.pk) == []


@pytest.mark.usefixtures("poison_handler")
def test_a_finished_attempt_is_not_counted_as_a_stall(double, tg_bot, settings):
    settings.TELEGRAM_MAX_ATTEMPTS = 3
    (row,) = updates_record(bot_id=tg_bot.pk, updates=[double.message(tg_bot.token, 7031, "boom")])
    assert update_run(update_pk=row.pk) == "retry"
    assert update_run(update_pk=row.pk) == "retry"
    assert update_run(update_pk=row.pk) == "done"
    row.refresh_from_db()
    assert (row.status, row.stalls) == (Status.FAILED, 0)  # failed, as before: not quarantined


class _Poller:
    """Stands in for a BotPoller: records the order jobs ran in; pk 1 blocks."""

    def __init__(self, bot_id: int) -> None:
        self.bot_id = bot_id
        self.ran: list[int] = []
        self.release = threading.Event()

    def _run_update(self, pk: int) -> None:
        self.ran.append(pk)
        if pk == 1:
            self.release.wait(10)


def test_a_held_lane_sends_the_bots_other_chats_around_it_and_keeps_each_chats_order():
    pool = ChatPool(2, per_bot=True)
    poller, other_bot = _Poller(1), _Poller(2)
    pool.submit(1, 10, UpdateJob(poller, 1, 10))  # holds bot 1's lane
    assert _wait(lambda: poller.ran == [1])
    pool.submit(1, 11, UpdateJob(poller, 2, 11))
    pool.submit(1, 10, UpdateJob(poller, 3, 10))  # same chat as the held job: must wait
    pool.submit(2, 20, UpdateJob(other_bot, 4, 20))
    assert _wait(lambda: other_bot.ran == [4])  # another bot: a free worker

    assert _wait(lambda: poller.ran == [1, 2])  # the detour, after DETOUR_AFTER
    time.sleep(0.3)
    assert poller.ran == [1, 2]  # chat 10 keeps its order behind the held job
    assert pool.detours == {1: {10}}

    poller.release.set()
    assert _wait(lambda: poller.ran == [1, 2, 3])
    assert _wait(lambda: not pool.detours)  # the bot has no work left: back to one lane
    assert pool.drain(5)


def _wait(predicate, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# --- The real runner ----------------------------------------------------------------------


@pytest.fixture
def runner_factory(double, tmp_path):
    started: list[Runbot] = []

    def start(args: list[str], **env) -> Runbot:
        env = {"TELEGRAM_EVENT_HANDLER": POISON, **env}
        runner = Runbot(double, args, tmp_path, f"runbot-{len(started)}", **env).start()
        started.append(runner)
        return runner

    yield start
    for runner in started:
        runner.stop()


def _answered_within(double, token: str, chat: int, text: str, timeout: float) -> float | None:
    """Send ``text`` as ``chat`` and return how long its echo took (None: not in time)."""
    sent = time.monotonic()
    double.message(token, chat, text)
    if double.wait_for(lambda: f"echo:{text}" in double.sent_texts(token, chat), timeout, 0.01):
        return time.monotonic() - sent
    return None


def _quarantined(double, bot, chat: int, timeout: float) -> bool:
    """The user got the fallback (and nothing else) and the row ended quarantined."""

    def done() -> bool:
        row = TelegramUpdate.objects.filter(bot=bot, chat_id=chat).first()
        return row is not None and row.status == Status.QUARANTINED

    return double.wait_for(done, timeout) and double.sent_texts(bot.token, chat) == [
        bot.project.fallback_message
    ]


def _two_bots(double):
    bots = [bot_create(), bot_create()]
    for bot in bots:
        double.bot_add(bot.token, bot.username)
    return bots


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_runbot_answers_everyone_else_while_one_update_loops_then_quarantines_it(
    double, runner_factory
):
    a, b = _two_bots(double)
    runner = runner_factory([str(a.pk), str(b.pk)], TELEGRAM_UPDATE_BUDGET="6")
    assert _answered_within(double, a.token, 7101, "warm-a", 30) is not None, runner.output()
    assert _answered_within(double, b.token, 7201, "warm-b", 30) is not None, runner.output()

    double.message(a.token, 7100, "loop")
    assert double.wait_for(lambda: cache.get("test:poison:7100") is not None, 15)
    looping_since = time.monotonic()
    # Another user of the same bot, and one of another bot, while the loop runs.
    same_bot = _answered_within(double, a.token, 7102, "same bot", 5)
    other_bot = _answered_within(double, b.token, 7202, "other bot", 5)
    assert same_bot is not None and other_bot is not None, runner.output()
    assert time.monotonic() - looping_since < 6, "answered only after the budget"
    print(f"while looping: same bot {same_bot:.2f} s, other bot {other_bot:.2f} s")
    assert TelegramUpdate.objects.get(bot=a, chat_id=7100).status == Status.PENDING

    assert _quarantined(double, a, 7100, 20), runner.output()
    row = TelegramUpdate.objects.get(bot=a, chat_id=7100)
    assert row.note == "quarantined: took longer than 6 s (the update budget)"
    # The looping user's chat and the worker are free again; the process lived on.
    assert _answered_within(double, a.token, 7100, "again", 10) is not None, runner.output()
    assert runner.proc.poll() is None
    assert "ran past its budget" in runner.output()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_gil_holding_update_ends_the_runner_and_is_quarantined_after_restarts(
    double, runner_factory
):
    a, b = _two_bots(double)
    env = {"TELEGRAM_UPDATE_BUDGET": "1", "TELEGRAM_FREEZE_EXIT": "2"}
    runner = runner_factory([str(a.pk), str(b.pk)], **env)
    assert _answered_within(double, b.token, 7301, "warm", 30) is not None, runner.output()

    double.message(a.token, 7300, "freeze")
    exits = []
    for _ in range(2):  # the fresh claim, then one stall (TELEGRAM_QUARANTINE_AFTER=2)
        exits.append(runner.wait(timeout=60))
        output = runner.output()
        assert "Timeout (0:00:02)!" in output  # faulthandler's timer ended it
        assert "poison.py" in output  # with every thread's traceback, the culprit's too
        runner = runner_factory([str(a.pk), str(b.pk)], **env)
    assert exits == [1, 1]

    assert _quarantined(double, a, 7300, 30), runner.output()
    row = TelegramUpdate.objects.get(bot=a, chat_id=7300)
    assert row.note == "quarantined: the runner stopped while handling it 2 times"
    for chat, bot in ((7302, a), (7303, b)):
        took = _answered_within(double, bot.token, chat, f"after {chat}", 10)
        assert took is not None, runner.output()
        print(f"after the restart: {took:.2f} s")
    time.sleep(3)  # longer than TELEGRAM_FREEZE_EXIT: the freeze is not run again
    assert runner.proc.poll() is None, runner.output()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_update_that_ignores_its_stop_ends_the_runner_after_the_freeze_grace(
    double, runner_factory
):
    a, b = _two_bots(double)
    double.message(a.token, 7350, "slow")  # sleeps in C: the stop cannot land for a minute
    env = {"TEST_SLOW_SECONDS": "60", "TELEGRAM_UPDATE_BUDGET": "1", "TELEGRAM_FREEZE_EXIT": "2"}
    runner = runner_factory([str(a.pk), str(b.pk)], **env)

    assert runner.wait(timeout=30) == budget.FREEZE_EXIT_CODE
    output = runner.output()
    assert "ran past its budget (1 s): stopping it" in output
    assert "did not stop 2 s after its budget ran out" in output
    assert "handlers.py" in output  # every thread's traceback, the sleeping handler's too
    row = TelegramUpdate.objects.get(bot=a, chat_id=7350)
    assert (row.status, row.claimed_at is not None) == (Status.PENDING, True)  # a stall


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_kill_9_twice_during_one_update_quarantines_it_on_the_next_start(double, runner_factory):
    a, b = _two_bots(double)
    env = {"TEST_SLOW_SECONDS": "60", "TELEGRAM_UPDATE_BUDGET": "120"}
    double.message(a.token, 7400, "slow")  # sits in its handler for a minute
    runner = runner_factory([str(a.pk), str(b.pk)], **env)
    for _ in range(2):
        assert double.wait_for(lambda: cache.get("test:in_handler:7400") is not None, 30), (
            runner.output()
        )
        cache.delete("test:in_handler:7400")
        runner.proc.kill()
        runner.wait()
        runner = runner_factory([str(a.pk), str(b.pk)], **env)

    assert _quarantined(double, a, 7400, 30), runner.output()
    row = TelegramUpdate.objects.get(bot=a, chat_id=7400)
    assert row.stalls == 2
    assert row.note == "quarantined: the runner stopped while handling it 2 times"
    assert cache.get("test:in_handler:7400") is None  # its handler did not run a third time
    assert _answered_within(double, a.token, 7401, "a", 10) is not None, runner.output()
    assert _answered_within(double, b.token, 7402, "b", 10) is not None, runner.output()


# --- What operators see -------------------------------------------------------------------


@pytest.mark.usefixtures("poison_handler")
def test_operators_find_quarantined_updates_with_a_readable_reason(double, tg_bot, admin_client):
    (row,) = updates_record(bot_id=tg_bot.pk, updates=[double.message(tg_bot.token, 7501, "die")])
    for _ in range(2):
        with pytest.raises(Died):
            update_run(update_pk=row.pk)
    update_run(update_pk=row.pk)
    updates_record(bot_id=tg_bot.pk, updates=[double.message(tg_bot.token, 7502, "fine")])
    url = "/admin/botplatform/telegramupdate/"

    everything = admin_client.get(url).content.decode()
    assert "Quarantined (never retried)" in everything  # the filter offers it

    page = admin_client.get(url, {"status__exact": "quarantined"}).content.decode()
    assert "quarantined: the runner stopped while handling it 2 times" in page
    assert "7501" in page and "7502" not in page
    assert "Traceback" not in page and tg_bot.token not in page
    detail = admin_client.get(f"{url}{row.pk}/change/").content.decode()
    assert "How many times a runner stopped while handling this update." in detail
    assert "Traceback" not in detail and tg_bot.token not in detail
