"""``manage.py runbot`` as a real subprocess against the Bot API double."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.db import connection

from botplatform import cache as keys
from botplatform.models import Bot, TelegramUpdate
from tests.botplatform.telegram.conftest import ECHO
from tests.factories import bot_create, project_create
from users.models import BotUser, UserVariable

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[3]


class Runbot:
    """One runbot process; its log goes to a file so a test can read it."""

    def __init__(self, double, args: list[str], tmp_path: Path, name: str = "runbot", **env):
        db = django_settings.DATABASES["default"]
        database_url = (
            f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/"
            f"{connection.settings_dict['NAME']}"
        )
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "botplatform.settings_test",
            "TEST_DATABASE_URL": database_url,
            "TEST_REDIS_URL": os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
            "TELEGRAM_API_URL": double.url,
            "TELEGRAM_EVENT_HANDLER": ECHO,
            "TELEGRAM_POLL_TIMEOUT": "1",
            "TELEGRAM_LEASE_TTL": "2",
            "TELEGRAM_DISCOVERY_INTERVAL": "1",
            "TELEGRAM_CHAT_SEND_WINDOW_MS": "300",
            "TELEGRAM_SHUTDOWN_GRACE": "15",
            "TELEGRAM_CHAT_WORKERS": "4",
            "LOG_LEVEL": "INFO",
            **{key: str(value) for key, value in env.items()},
        }
        self.args = args
        self.log_path = tmp_path / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Runbot:
        self.log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "runbot", *self.args],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 20) -> int:
        code = self.proc.wait(timeout)
        self.log.close()
        return code

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if not self.log.closed:
            self.log.close()


@pytest.fixture
def runbots(double, tmp_path):
    started: list[Runbot] = []

    def start(args: list[str], name: str = "runbot", **env) -> Runbot:
        runner = Runbot(double, args, tmp_path, name, **env).start()
        started.append(runner)
        return runner

    yield start
    for runner in started:
        runner.stop()


def _handled_counts(bot) -> dict[int, int]:
    return {
        v.user.telegram_id: v.value
        for v in UserVariable.objects.filter(
            user__project=bot.project, key="handled"
        ).select_related("user")
    }


def test_runbot_answers_in_order_per_chat_and_stops_cleanly_on_sigterm(double, runbots):
    bot = bot_create()
    double.bot_add(bot.token, bot.username)
    texts = {chat: [f"{chat}-{i}" for i in range(5)] for chat in (901, 902, 903)}
    for i in range(5):
        for chat in texts:
            double.message(bot.token, chat, texts[chat][i])
    runner = runbots([bot.username])
    assert double.wait_for(lambda: len(double.sent_texts(bot.token)) == 15), runner.output()
    for chat, sent in texts.items():
        assert double.sent_texts(bot.token, chat) == [f"echo:{text}" for text in sent]
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0, runner.output()
    assert "Runner" in runner.output() and "stopped" in runner.output()
    assert set(TelegramUpdate.objects.values_list("status", flat=True)) == {"done"}
    bot.refresh_from_db()
    assert bot.status == Bot.Status.OK
    assert bot.token not in runner.output()


def test_kill_9_mid_batch_then_restart_answers_every_update_exactly_once(double, runbots):
    # Three bots, one user each: with batch handling a bot's updates share a worker,
    # so three bots put three workers inside handlers at the same time.
    bots = [bot_create() for _ in range(3)]
    for bot in bots:
        double.bot_add(bot.token, bot.username)
    chats = {bot.token: chat for bot, chat in zip(bots, (911, 912, 913), strict=True)}
    sent = []

    def send(kind: str, i: int) -> None:
        for token, chat in chats.items():
            sent.append(double.message(token, chat, f"{kind} {chat}-{i}")["message"]["text"])

    for i in range(2):  # a first batch, answered before the crash
        send("quick", i)
    first = runbots([str(bot.pk) for bot in bots], TEST_SLOW_SECONDS="0.4")
    assert double.wait_for(lambda: len(double.sent_texts()) == 6, timeout=30), first.output()
    for i in range(2, 8):  # the second batch: every bot's worker sits in a slow handler
        send("slow", i)

    def all_workers_just_entered_a_handler() -> bool:
        started = cache.get_many([f"test:in_handler:{chat}" for chat in chats.values()])
        now = time.time()
        return len(started) == 3 and all(now - at < 0.25 for at in started.values())

    # Kill while every worker is inside a handler's transaction (each batch is half
    # done, three updates are mid-flight), not while replies go out: replies already
    # accepted by Telegram and a crash before they are recorded are the one case that
    # is sent twice (see docs/telegram.md).
    assert double.wait_for(all_workers_just_entered_a_handler, timeout=30, interval=0.01)
    first.proc.kill()  # SIGKILL: no clean-up at all
    first.wait()
    answered_before = len(double.sent_texts())
    assert answered_before < len(sent), "the kill came too late to prove anything"

    second = runbots([str(bot.pk) for bot in bots], name="second", TEST_SLOW_SECONDS="0.05")
    assert double.wait_for(lambda: len(double.sent_texts()) >= len(sent), timeout=40), (
        second.output()
    )
    time.sleep(1.0)  # a duplicate would show up now
    replies = Counter(double.sent_texts())
    assert replies == Counter(f"echo:{text}" for text in sent)
    for bot in bots:
        assert _handled_counts(bot) == {chats[bot.token]: 8}
    for token, chat in chats.items():
        expected = [f"echo:quick {chat}-{i}" for i in range(2)]
        expected += [f"echo:slow {chat}-{i}" for i in range(2, 8)]
        assert double.sent_texts(token, chat) == expected
    second.signal(signal.SIGTERM)
    assert second.wait() == 0


def test_sigterm_finishes_in_flight_updates_before_exiting(double, runbots):
    bot = bot_create()
    double.bot_add(bot.token, bot.username)
    double.message(bot.token, 921, "slow one")
    runner = runbots([str(bot.pk)], TEST_SLOW_SECONDS="1.5")
    assert double.wait_for(lambda: TelegramUpdate.objects.filter(bot=bot).exists(), timeout=15)
    time.sleep(0.3)  # the handler is now sleeping inside the update
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0, runner.output()
    assert double.sent_texts(bot.token) == ["echo:slow one"]
    assert TelegramUpdate.objects.get(bot=bot).status == TelegramUpdate.Status.DONE


def test_network_errors_5xx_and_429_are_survived(double, runbots):
    bot = bot_create()
    double.bot_add(bot.token, bot.username)
    double.fail("getUpdates", 502, times=2)
    double.fail("getUpdates", 429, retry_after=1)
    double.fail("sendMessage", 429, retry_after=1)
    double.fail("sendMessage", 500, times=1)
    for i in range(3):
        double.message(bot.token, 931, f"m{i}")
    runner = runbots([str(bot.pk)])
    assert double.wait_for(lambda: len(double.sent_texts(bot.token)) == 3, timeout=30), (
        runner.output()
    )
    assert double.sent_texts(bot.token) == ["echo:m0", "echo:m1", "echo:m2"]
    statuses = Counter(call.status for call in double.calls_of("sendMessage", ok=False))
    assert statuses == Counter({200: 3, 429: 1, 500: 1})
    assert "retrying" in runner.output()
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0


def test_revoked_token_stops_the_bot_with_a_clear_status_and_no_crash_loop(double, runbots):
    bot = bot_create()
    double.bot_add(bot.token, bot.username)
    double.revoke(bot.token)
    runner = runbots([str(bot.pk)])
    assert runner.wait(timeout=30) == 1
    output = runner.output()
    assert "401" in output and bot.token_masked in output
    assert bot.token not in output
    bot.refresh_from_db()
    assert bot.status == Bot.Status.UNAUTHORIZED
    assert len(double.calls_of("getUpdates", ok=False)) == 1  # tried once, then stopped


def test_two_all_runners_share_bots_without_overlap_and_fail_over(double, runbots):
    project = project_create()
    bots = [bot_create(project=project) for _ in range(4)]
    for bot in bots:
        double.bot_add(bot.token, bot.username)
    unauthorized = bot_create(project=project)  # a broken bot is skipped, not retried
    double.bot_add(unauthorized.token)
    double.revoke(unauthorized.token)
    webhook_bot = bot_create(project=project, mode=Bot.Mode.WEBHOOK)  # not polled
    double.bot_add(webhook_bot.token)

    a = runbots(["--all"], name="a")
    b = runbots(["--all"], name="b")

    from django_redis import get_redis_connection

    redis = get_redis_connection("default")

    def holders() -> dict[int, str]:
        result = {}
        for bot in bots:
            value = redis.get(keys.telegram_lease_key(bot.pk))
            if value:
                result[bot.pk] = value.decode()
        return result

    # Balanced: both runners hold two bots each.
    assert double.wait_for(
        lambda: len(holders()) == 4 and len(set(holders().values())) == 2, timeout=30
    ), a.output() + b.output()
    for n, bot in enumerate(bots):
        double.message(bot.token, 940 + n, "hello")
    assert double.wait_for(
        lambda: TelegramUpdate.objects.filter(status="done").count() == 4, timeout=20
    )

    # Kill the holder of the first bot; the other takes everything over within seconds.
    victim_holder = holders()[bots[0].pk]
    victim = a if str(a.proc.pid) in victim_holder else b
    survivor = b if victim is a else a
    victim.proc.kill()
    victim.wait()
    for n, bot in enumerate(bots):
        double.message(bot.token, 940 + n, "after")
    assert double.wait_for(lambda: len(double.sent_texts()) == 8, timeout=20), survivor.output()
    assert len(set(holders().values())) == 1

    assert Counter(double.sent_texts()) == Counter({"echo:hello": 4, "echo:after": 4})
    assert double.conflicts == 0  # never two getUpdates for one bot at the same time
    assert double.calls_of("getUpdates", webhook_bot.token, ok=False) == []
    assert len(double.calls_of("getUpdates", unauthorized.token, ok=False)) == 1
    unauthorized.refresh_from_db()
    assert unauthorized.status == Bot.Status.UNAUTHORIZED

    # A new bot is picked up, a deactivated one released, without a restart.
    new_bot = bot_create(project=project)
    double.bot_add(new_bot.token)
    double.message(new_bot.token, 950, "new")
    assert double.wait_for(lambda: "echo:new" in double.sent_texts(new_bot.token), timeout=20)
    Bot.objects.filter(pk=bots[1].pk).update(is_active=False)
    assert double.wait_for(lambda: bots[1].pk not in holders(), timeout=20)
    survivor.signal(signal.SIGTERM)
    assert survivor.wait() == 0
    assert holders() == {}  # leases released on a clean stop
    assert BotUser.objects.filter(project=project).count() == 5


def test_a_second_runner_of_the_same_bot_waits_for_the_lease(double, runbots):
    bot = bot_create()
    double.bot_add(bot.token, bot.username)
    first = runbots([str(bot.pk)], name="first")
    assert double.wait_for(lambda: len(double.calls_of("getUpdates", bot.token)) >= 1)
    second = runbots([str(bot.pk)], name="second")
    assert double.wait_for(lambda: "waiting for its lease" in second.output(), timeout=15)
    double.message(bot.token, 960, "one")
    assert double.wait_for(lambda: double.sent_texts(bot.token) == ["echo:one"], timeout=15)

    first.signal(signal.SIGTERM)  # a clean stop releases the lease at once
    assert first.wait() == 0
    double.message(bot.token, 960, "two")
    assert double.wait_for(lambda: len(double.sent_texts(bot.token)) == 2, timeout=15), (
        second.output()
    )
    assert double.sent_texts(bot.token) == ["echo:one", "echo:two"]
    assert "lease acquired" in second.output()
    assert double.conflicts == 0
    second.signal(signal.SIGTERM)
    assert second.wait() == 0


def test_pollers_hold_no_database_connection_so_many_bots_fit(double, runbots):
    bots = [bot_create() for _ in range(12)]
    for bot in bots:
        double.bot_add(bot.token, bot.username)
    runner = runbots(["--all"], TELEGRAM_CHAT_WORKERS="2", TELEGRAM_RECORDERS="1")
    for bot in bots:
        double.message(bot.token, 990, f"hello {bot.pk}")
    assert double.wait_for(lambda: len(double.sent_texts()) == len(bots), timeout=30), (
        runner.output()
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )  # not an autovacuum worker that happens to be in this database
        (connections,) = cursor.fetchone()
    # Twelve bots polled: two chat workers, one recorder, the main loop and the beat.
    assert connections <= 5, connections
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0, runner.output()


def test_hostile_updates_in_a_batch_never_silence_the_other_users(double, runbots):
    """NUL text, a lone-surrogate name, a 70-bit chat id and NaN in one getUpdates
    batch with normal users: everyone answerable is answered, the offset moves on,
    also for the runner started after a kill -9."""
    bot = bot_create()
    double.bot_add(bot.token, bot.username)
    double.message(bot.token, 1001, "hi\x00there")
    double.message(bot.token, 1002, "hello")["message"]["from"]["first_name"] = "Eve\ud800"
    giant = double.message(bot.token, 1003, "big")
    giant["message"]["chat"]["id"] = 2**70
    double.message(bot.token, 1004, "nan")["message"]["date"] = float("nan")
    for chat in (1011, 1012, 1013):
        double.message(bot.token, chat, f"normal {chat}")
    runner = runbots([str(bot.pk)])
    expected = {
        1001: ["echo:hi\ufffdthere"],
        1002: ["echo:hello"],
        1004: ["echo:nan"],
        **{chat: [f"echo:normal {chat}"] for chat in (1011, 1012, 1013)},
    }
    assert double.wait_for(lambda: len(double.sent_texts(bot.token)) == 6, timeout=30), (
        runner.output()
    )
    for chat, texts in expected.items():
        assert double.sent_texts(bot.token, chat) == texts
    skipped = TelegramUpdate.objects.get(bot=bot, status=TelegramUpdate.Status.SKIPPED)
    assert skipped.note.endswith("no numeric id that fits in 64 bits")
    assert BotUser.objects.get(telegram_id=1002).first_name == "Eve\ufffd"
    # The offset moved past the batch: a later user is answered, nothing is re-handed.
    double.message(bot.token, 1014, "later")
    assert double.wait_for(lambda: double.sent_texts(bot.token, 1014) == ["echo:later"]), (
        runner.output()
    )
    assert double.pending(bot.token) == 0
    assert "could not record" not in runner.output()
    # Every row delivered and marked done (a kill -9 between a reply and its done mark
    # re-sends that one reply, by design: docs/reliability.md).
    assert double.wait_for(
        lambda: (
            not TelegramUpdate.objects.filter(
                bot=bot, status=TelegramUpdate.Status.HANDLED
            ).exists()
        )
    )
    # After a crash the new runner starts past them too, and hands nothing out twice.
    runner.proc.kill()
    runner.wait()
    double.message(bot.token, 1015, "after restart")
    second = runbots([str(bot.pk)], name="second")
    assert double.wait_for(
        lambda: double.sent_texts(bot.token, 1015) == ["echo:after restart"], timeout=30
    ), second.output()
    assert len(double.sent_texts(bot.token)) == 8
    second.signal(signal.SIGTERM)
    assert second.wait() == 0, second.output()


def test_getupdates_answers_the_client_cannot_read_are_skipped_one_by_one(double, runbots):
    """pyTelegramBotAPI fails the whole getUpdates answer when one update in it is
    nested too deep for Python's json or holds a 5,000-digit number. The poller reads
    one update at a time, skips the unreadable one (a skipped row says why) and moves on."""
    bot = bot_create()
    double.bot_add(bot.token, bot.username)
    double.message(bot.token, 1021, "before")
    deep = double.enqueue_raw(bot.token, '"message": ' + "[" * 100_000 + "]" * 100_000)
    double.message(bot.token, 1022, "between")
    huge = double.enqueue_raw(bot.token, '"message": {"message_id": 1' + "0" * 5000 + "}")
    double.message(bot.token, 1023, "after")
    runner = runbots([str(bot.pk)])
    assert double.wait_for(lambda: len(double.sent_texts(bot.token)) == 3, timeout=30), (
        runner.output()
    )
    assert double.sent_texts(bot.token) == ["echo:before", "echo:between", "echo:after"]
    notes = dict(
        TelegramUpdate.objects.filter(bot=bot, status=TelegramUpdate.Status.SKIPPED).values_list(
            "update_id", "note"
        )
    )
    assert set(notes) == {deep, huge}
    assert "RecursionError" in notes[deep] and "could not be read" in notes[deep]
    assert "4300 digits" in notes[huge]
    double.message(bot.token, 1024, "later")
    assert double.wait_for(lambda: double.sent_texts(bot.token, 1024) == ["echo:later"])
    assert double.pending(bot.token) == 0
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0, runner.output()
