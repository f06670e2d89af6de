"""runbot's fast path: a getUpdates batch handled in one transaction (telegram/batch.py)."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from botplatform.locks import JOURNAL_CLAIM_NAMESPACE
from botplatform.models import Bot, TelegramUpdate
from botplatform.telegram.batch import update_process, updates_run_batch
from botplatform.telegram.client import api
from botplatform.telegram.dispatch import claim_key, update_run
from botplatform.telegram.journal import updates_record
from devtools import bench
from tests.users.helpers import other_connection
from users.models import BotUser, UserVariable
from workflows.models import ExecutionStepLog, WorkflowExecution

Status = TelegramUpdate.Status
DEMO_TOKEN = "778000:AAH" + "b" * 32


def _handled(bot, telegram_id: int) -> int | None:
    variable = UserVariable.objects.filter(
        user__project=bot.project, user__telegram_id=telegram_id, key="handled"
    ).first()
    return None if variable is None else variable.value


def _record(bot, updates: list[dict]) -> list[TelegramUpdate]:
    return updates_record(bot_id=bot.pk, updates=updates)


@pytest.mark.usefixtures("echo_handler")
def test_a_batch_is_handled_once_in_order_and_delivered(double, tg_bot):
    updates = []
    for round_ in range(2):
        for chat in (601, 602, 603):
            updates.append(double.message(tg_bot.token, chat, f"m{round_}-{chat}"))
    rows = _record(tg_bot, updates)

    result = updates_run_batch(bot_id=tg_bot.pk, rows=rows)

    assert result.leftovers == []
    assert result.handled == 6
    assert len(result.latencies) == 6
    for chat in (601, 602, 603):
        assert double.sent_texts(tg_bot.token, chat) == [f"echo:m0-{chat}", f"echo:m1-{chat}"]
        assert _handled(tg_bot, chat) == 2
    stored = TelegramUpdate.objects.filter(bot=tg_bot)
    assert {(row.status, row.sent_count, row.attempts) for row in stored} == {(Status.DONE, 1, 1)}
    # The claims are free again: update_run can take (and finds nothing to do).
    assert update_run(update_pk=rows[0].pk) == "done"
    assert len(double.sent_texts(tg_bot.token)) == 6


@pytest.mark.usefixtures("echo_handler")
def test_a_failing_update_rolls_the_batch_back_and_update_run_takes_over(double, tg_bot):
    rows = _record(
        tg_bot,
        [
            double.message(tg_bot.token, 611, "fine"),
            double.message(tg_bot.token, 612, "boom"),
            double.message(tg_bot.token, 613, "also fine"),
        ],
    )

    result = updates_run_batch(bot_id=tg_bot.pk, rows=rows)

    assert result.leftovers == [row.pk for row in rows]
    assert result.handled == 0
    # Nothing of the batch was applied: no handler effect, no attempt counted, no reply.
    assert _handled(tg_bot, 611) is None
    assert double.sent_texts(tg_bot.token) == []
    assert {(r.status, r.attempts) for r in TelegramUpdate.objects.filter(bot=tg_bot)} == {
        (Status.PENDING, 0)
    }
    outcomes = [update_run(update_pk=pk) for pk in result.leftovers]
    assert outcomes == ["done", "retry", "done"]
    assert double.sent_texts(tg_bot.token) == ["echo:fine", "echo:also fine"]
    assert _handled(tg_bot, 611) == _handled(tg_bot, 613) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("echo_handler")
def test_a_row_claimed_elsewhere_leaves_the_whole_batch_to_update_run(double, tg_bot):
    rows = _record(
        tg_bot,
        [double.message(tg_bot.token, 621, "a"), double.message(tg_bot.token, 622, "b")],
    )
    other = other_connection()
    try:
        other.execute(
            "SELECT pg_advisory_lock(%s, %s)", [JOURNAL_CLAIM_NAMESPACE, claim_key(rows[1].pk)]
        )
        result = updates_run_batch(bot_id=tg_bot.pk, rows=rows)
        assert result.leftovers == [rows[0].pk, rows[1].pk]
        assert double.sent_texts(tg_bot.token) == []
        assert update_run(update_pk=rows[1].pk) == "busy"  # still held by the other session
        # The batch freed the row it had claimed: update_run can take it.
        assert update_run(update_pk=rows[0].pk) == "done"
        other.execute(
            "SELECT pg_advisory_unlock(%s, %s)", [JOURNAL_CLAIM_NAMESPACE, claim_key(rows[1].pk)]
        )
    finally:
        other.close()
    assert update_run(update_pk=rows[1].pk) == "done"
    assert double.sent_texts(tg_bot.token) == ["echo:a", "echo:b"]


@pytest.mark.usefixtures("echo_handler")
def test_a_send_that_must_wait_leaves_the_rest_to_update_run_without_repeats(double, tg_bot):
    rows = _record(
        tg_bot,
        [double.message(tg_bot.token, 630 + i, f"t{i}") for i in range(4)],
    )
    double.sent_texts(tg_bot.token)
    # The second reply fails with a 500 for longer than the send may wait.
    original = double._answer

    calls = {"n": 0}

    def flaky(token, method, params):
        if method == "sendMessage":
            calls["n"] += 1
            if calls["n"] == 2:
                return double._error(500, "Internal Server Error")
        return original(token, method, params)

    double._answer = flaky
    from django.test import override_settings

    with override_settings(TELEGRAM_SEND_MAX_WAIT=0):
        result = updates_run_batch(bot_id=tg_bot.pk, rows=rows)

    assert result.handled == 1
    assert result.leftovers == [row.pk for row in rows[1:]]
    statuses = {row.pk: row.status for row in TelegramUpdate.objects.filter(bot=tg_bot)}
    assert statuses[rows[0].pk] == Status.DONE
    assert {statuses[row.pk] for row in rows[1:]} == {Status.HANDLED}
    for pk in result.leftovers:
        assert update_run(update_pk=pk) == "done"
    # Every user got exactly one reply; the handler ran once per update.
    assert sorted(double.sent_texts(tg_bot.token)) == [f"echo:t{i}" for i in range(4)]
    assert [_handled(tg_bot, 630 + i) for i in range(4)] == [1, 1, 1, 1]


# --- The real engine: the demo loyalty conversation -----------------------------------


@pytest.fixture
def demo_bot(db, double, settings):
    settings.TELEGRAM_EVENT_HANDLER = "workflows.handler.handler"
    double.bot_add(DEMO_TOKEN, "demo_bot")
    call_command("loaddemo", "--token", DEMO_TOKEN)
    bot = Bot.objects.get(token=DEMO_TOKEN)
    bot.project.bot_send_rate_per_second = 1000
    bot.project.save(update_fields=["bot_send_rate_per_second"])
    return bot


def _round(double, bot, chats: list[int], step: int, offset: dict) -> list[TelegramUpdate]:
    """Every chat makes its next demo move (as the benchmark's users do); record them."""
    for chat in chats:
        bench._next_update(double, bot.token, chat, step)
    updates = api().get_updates(bot.token, offset=offset.get("next"), limit=100)
    offset["next"] = max(u["update_id"] for u in updates) + 1
    return _record(bot, updates)


def test_the_demo_conversation_costs_a_fixed_number_of_statements_per_batch(double, demo_bot):
    small, large = list(range(7000, 7005)), list(range(8000, 8010))
    offset: dict = {}
    counts = {}
    for chats in (small, large):
        for step in range(4):
            rows = _round(double, demo_bot, chats, step, offset)
            with CaptureQueriesContext(connection) as queries:
                result = updates_run_batch(bot_id=demo_bot.pk, rows=rows)
            assert result.leftovers == [], step
            counts[(len(chats), step)] = len(queries)
    # Step 3: everybody at the menu presses a button of a resumed conversation (warm).
    assert counts[(5, 3)] == counts[(10, 3)]
    # Twice as many updates, the same statements: at most one per message at ten.
    # (Inside the test's transaction the batch's own adds SAVEPOINT and RELEASE.)
    assert counts[(10, 3)] - 2 <= 10
    # Step 1 shows the ledger history, which is read per user: one statement each.
    assert counts[(10, 1)] - counts[(5, 1)] == 5
    # Each button press was answered and moved its conversation on.
    assert WorkflowExecution.objects.filter(status="waiting").count() == 15
    assert ExecutionStepLog.objects.filter(execution__bot=demo_bot).count() >= 15 * 4


def test_two_updates_of_one_chat_in_a_batch_see_each_other(double, demo_bot):
    offset: dict = {}
    rows = _round(double, demo_bot, [9001], 0, offset)  # /start
    assert updates_run_batch(bot_id=demo_bot.pk, rows=rows).leftovers == []  # a wave of one
    first_wait = WorkflowExecution.objects.get(status="waiting")
    # A button press, then /start again, from the same chat in one batch.
    bench._next_update(double, demo_bot.token, 9001, 1)
    double.command(demo_bot.token, 9001, "/start")
    updates = api().get_updates(demo_bot.token, offset=offset["next"], limit=100)
    rows = _record(demo_bot, updates)
    assert len(rows) == 2

    result = updates_run_batch(bot_id=demo_bot.pk, rows=rows)

    assert result.leftovers == []
    waiting = WorkflowExecution.objects.filter(session_key=first_wait.session_key, status="waiting")
    assert waiting.count() == 1  # the newest prompt wins; the index never saw two
    assert waiting.get().pk != first_wait.pk
    first_wait.refresh_from_db()
    assert first_wait.status == "cancelled"
    # Its button press was handled (and logged) before the second /start cancelled it.
    assert ExecutionStepLog.objects.filter(execution=first_wait, input__event="callback").exists()
    user = BotUser.objects.get(project=demo_bot.project, telegram_id=9001)
    assert user.balance > 0  # the welcome bonus, once
    assert len(double.sent_texts(demo_bot.token, 9001)) == 2  # the two menus
    assert len(double.calls_of("answerCallbackQuery", demo_bot.token)) == 1


# --- What the batch reads ahead in one Redis round trip each ----------------------------


def test_incoming_limits_of_a_batch_count_in_order_like_one_by_one(db):
    from django_redis import get_redis_connection

    from botplatform import ratelimit
    from tests.users.helpers import redis_round_trips

    checks = [(1, 501, 2), (1, 502, 2), (1, 501, 2), (1, 501, 2), (1, 501, 2)]
    get_redis_connection("default").script_flush()  # as after a Redis restart
    assert ratelimit.incoming_check_many(checks) == ["ok", "ok", "ok", "notify", "ignore"]
    # The same counters as the one-by-one check: user 502 has one slot left, 501 none.
    assert ratelimit.incoming_check(project_id=1, telegram_id=502, limit=2) == "ok"
    assert ratelimit.incoming_check(project_id=1, telegram_id=501, limit=2) == "ignore"

    with pytest.MonkeyPatch.context() as monkeypatch, redis_round_trips(monkeypatch) as trips:
        verdicts = ratelimit.incoming_check_many([(2, 600 + i, 5) for i in range(10)])
    assert verdicts == ["ok"] * 10
    assert trips.count == 1


def test_the_state_of_several_users_is_read_in_one_round_trip(db):
    from django.core.cache import cache

    from tests.factories import bot_user_create
    from tests.users.helpers import redis_round_trips
    from users.selectors import user_state_get, user_state_keys, user_states_read

    users = [bot_user_create() for _ in range(3)]
    for user in users:
        user_state_get(user_id=user.pk, project_id=user.project_id)  # caches it
    cache.set("extra:key", 42)
    pairs = [(user.pk, user.project_id) for user in users]
    with pytest.MonkeyPatch.context() as monkeypatch, redis_round_trips(monkeypatch) as trips:
        values = user_states_read(users=pairs, extra_keys=["extra:key", "missing:key"])
    assert trips.count == 1
    assert values["extra:key"] == 42 and "missing:key" not in values
    for user in users:
        variables_key, profile_key, _generation = user_state_keys(
            user_id=user.pk, project_id=user.project_id
        )
        assert values[profile_key]["data"]["telegram_id"] == user.telegram_id
        assert values[variables_key]["data"]["balance"] == user.balance


def test_last_seen_stamps_of_a_batch_cost_no_statement_of_their_own(double, demo_bot):
    from datetime import timedelta

    from django.utils import timezone

    chats = list(range(9100, 9106))
    offset: dict = {}
    for step in range(3):
        rows = _round(double, demo_bot, chats, step, offset)
        assert updates_run_batch(bot_id=demo_bot.pk, rows=rows).leftovers == []
    rows = _round(double, demo_bot, chats, 3, offset)
    with CaptureQueriesContext(connection) as fresh:
        assert updates_run_batch(bot_id=demo_bot.pk, rows=rows).leftovers == []
    long_ago = timezone.now() - timedelta(minutes=5)
    BotUser.objects.filter(telegram_id__in=chats).update(last_seen_at=long_ago)

    rows = _round(double, demo_bot, chats, 4, offset)
    with CaptureQueriesContext(connection) as stale:
        assert updates_run_batch(bot_id=demo_bot.pk, rows=rows).leftovers == []

    assert len(stale) == len(fresh)  # the stamps rode along in the batch's one write
    stamps = BotUser.objects.filter(telegram_id__in=chats).values_list("last_seen_at", flat=True)
    assert len(stamps) == len(chats)
    assert all(stamp > long_ago + timedelta(minutes=4) for stamp in stamps)


def _press_all(double, bot, chats: list[int], text: str) -> list[TelegramUpdate]:
    return _record(bot, [double.press(bot.token, chat, text) for chat in chats])


@pytest.mark.django_db(transaction=True)
def test_stale_user_states_of_a_batch_are_loaded_together(double, demo_bot):
    from botplatform import metrics

    counts, misses = {}, {}
    for chats in (list(range(9200, 9205)), list(range(9300, 9310))):
        rows = _record(demo_bot, [double.command(demo_bot.token, c, "/start") for c in chats])
        assert updates_run_batch(bot_id=demo_bot.pk, rows=rows).leftovers == []
        # The welcome bonus (committed) made every user's cached state stale.
        rows = _press_all(double, demo_bot, chats, "Balance")
        before = metrics.totals().get(
            'bp_cache_requests_total{family="user_state",result="miss"}', 0
        )
        with CaptureQueriesContext(connection) as queries:
            assert updates_run_batch(bot_id=demo_bot.pk, rows=rows).leftovers == []
        after = metrics.totals()['bp_cache_requests_total{family="user_state",result="miss"}']
        counts[len(chats)], misses[len(chats)] = len(queries), after - before
        for chat in chats:  # the fresh balance, not the one cached before the bonus
            text = double.messages[(chat, double.last_message[chat])]["text"]
            assert f"<b>{demo_bot.project.welcome_bonus}</b>" in text
    assert counts[5] == counts[10]  # two statements for all of them, not two each
    assert misses == {5: 5, 10: 10}  # and each still counts as the miss it was


def test_a_worker_merges_the_same_bots_queued_batches_in_order():
    from collections import deque

    from botplatform.telegram.lanes import BatchJob

    first, second = object(), object()  # two pollers of one bot (a hand-over)
    head = BatchJob(first, ["a1"])
    lane = deque([BatchJob(first, ["a2", "a3"]), BatchJob(second, ["b1"]), BatchJob(first, ["a4"])])

    head.absorb(lane)

    assert head.rows == ["a1", "a2", "a3"]  # merged up to another poller's job...
    assert [job.rows for job in lane] == [["b1"], ["a4"]]  # ...which stays next, in order


class _Crash(BaseException):
    """Stands in for the process dying: nothing catches it, nothing is cleaned up."""


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("echo_handler")
def test_a_crash_during_delivery_resends_only_that_waves_sent_replies(double, tg_bot, monkeypatch):
    """The documented trade-off of the batch path (docs/telegram.md), shown."""
    from botplatform.telegram import batch

    rows = _record(tg_bot, [double.message(tg_bot.token, 640 + i, f"c{i}") for i in range(3)])
    real_send = batch.actions_send
    calls = {"n": 0}

    def dying_send(**kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise _Crash
        real_send(**kwargs)

    monkeypatch.setattr(batch, "actions_send", dying_send)
    with pytest.raises(_Crash):
        updates_run_batch(bot_id=tg_bot.pk, rows=rows)
    connection.close()  # the process is gone: the server drops its claims
    monkeypatch.setattr(batch, "actions_send", real_send)

    # The wave had committed: replies stored, handler effects applied, nothing done.
    stored = TelegramUpdate.objects.filter(bot=tg_bot)
    assert set(stored.values_list("status", flat=True)) == {Status.HANDLED}
    assert double.sent_texts(tg_bot.token) == ["echo:c0"]

    for row in rows:  # recovery, as runbot does for open rows at start-up
        assert update_run(update_pk=row.pk) == "done"

    # Each handler ran once; only the reply already out before the crash went twice.
    assert [_handled(tg_bot, 640 + i) for i in range(3)] == [1, 1, 1]
    assert sorted(double.sent_texts(tg_bot.token)) == ["echo:c0", "echo:c0", "echo:c1", "echo:c2"]
    assert set(stored.values_list("status", flat=True)) == {Status.DONE}


@pytest.mark.usefixtures("echo_handler")
def test_a_user_flooding_a_batch_is_told_once_then_ignored(double, tg_bot):
    from collections import Counter

    project = tg_bot.project
    project.user_rate_limit_per_minute = 3
    project.save(update_fields=["user_rate_limit_per_minute"])
    updates = [double.message(tg_bot.token, 650, f"m{i}") for i in range(7)]
    updates.append(double.message(tg_bot.token, 651, "other user"))
    rows = _record(tg_bot, updates)

    result = updates_run_batch(bot_id=tg_bot.pk, rows=rows)

    assert result.leftovers == [] and result.handled == 8  # in waves: one per message
    texts = Counter(double.sent_texts(tg_bot.token, 650))
    assert texts == Counter(
        {"echo:m0": 1, "echo:m1": 1, "echo:m2": 1, project.rate_limited_message: 1}
    )
    assert double.sent_texts(tg_bot.token, 651) == ["echo:other user"]
    assert _handled(tg_bot, 650) == 3
    notes = list(
        TelegramUpdate.objects.filter(chat_id=650)
        .order_by("update_id")
        .values_list("note", flat=True)
    )
    assert notes == ["", "", "", "rate limited (notify)", *["rate limited (ignore)"] * 3]
    done = TelegramUpdate.objects.filter(bot=tg_bot, status=Status.DONE).count()
    assert done == 8


def _crash_in_handler(monkeypatch) -> None:
    from botplatform.telegram import batch

    def dying_decide(*args, **kwargs):
        raise _Crash

    monkeypatch.setattr(batch, "row_decide", dying_decide)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("echo_handler")
def test_a_death_during_a_wave_of_one_counts_a_stall_as_update_run_does(
    double, tg_bot, monkeypatch
):
    """One update per poll takes the fast path, and a runner dying in its handler is
    still counted (docs/reliability.md): after TELEGRAM_QUARANTINE_AFTER deaths
    the update is quarantined, not run for ever."""
    (row,) = _record(tg_bot, [double.message(tg_bot.token, 660, "poison")])
    _crash_in_handler(monkeypatch)
    with pytest.raises(_Crash):
        updates_run_batch(bot_id=tg_bot.pk, rows=[row])
    connection.close()  # the process is gone: the server drops its claims
    monkeypatch.undo()

    row.refresh_from_db()
    assert (row.status, row.attempts, row.stalls) == (Status.PENDING, 1, 0)
    assert row.claimed_at is not None  # committed before the handler ran

    # The fast path leaves a stalled row to update_run, which counts the stall.
    assert updates_run_batch(bot_id=tg_bot.pk, rows=[row]).leftovers == [row.pk]
    row.refresh_from_db()
    assert (row.attempts, row.stalls, row.claimed_at is not None) == (1, 0, True)
    from botplatform.telegram import dispatch

    def dying_decide(*args, **kwargs):
        raise _Crash

    monkeypatch.setattr(dispatch, "row_decide", dying_decide)
    with pytest.raises(_Crash):
        update_run(update_pk=row.pk)
    connection.close()
    monkeypatch.undo()
    assert update_run(update_pk=row.pk) == "done"  # the second death: quarantined
    row.refresh_from_db()
    assert row.status == Status.QUARANTINED
    assert row.note == "quarantined: the runner stopped while handling it 2 times"
    assert _handled(tg_bot, 660) is None  # never run to the end
    assert double.sent_texts(tg_bot.token, 660) == [tg_bot.project.fallback_message]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("echo_handler")
def test_a_death_during_a_wave_of_several_charges_no_row_a_stall(double, tg_bot, monkeypatch):
    rows = _record(tg_bot, [double.message(tg_bot.token, 670 + i, "m") for i in range(3)])
    _crash_in_handler(monkeypatch)
    with pytest.raises(_Crash):
        updates_run_batch(bot_id=tg_bot.pk, rows=rows)
    connection.close()
    monkeypatch.undo()

    stored = TelegramUpdate.objects.filter(bot=tg_bot)
    assert set(stored.values_list("status", "attempts", "claimed_at")) == {
        (Status.PENDING, 0, None)  # the claim was part of the rolled-back transaction
    }
    assert updates_run_batch(bot_id=tg_bot.pk, rows=rows).leftovers == []
    assert sorted(double.sent_texts(tg_bot.token)) == ["echo:m"] * 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("echo_handler")
def test_a_failing_wave_of_one_gives_back_its_attempt_and_stamp(double, tg_bot, monkeypatch):
    """An error (not a death) hands the row to update_run as if the wave never ran."""
    from botplatform.telegram import batch

    (row,) = _record(tg_bot, [double.message(tg_bot.token, 680, "x")])
    monkeypatch.setattr(batch, "row_decide", lambda *a, **k: 1 / 0)
    assert updates_run_batch(bot_id=tg_bot.pk, rows=[row]).leftovers == [row.pk]
    row.refresh_from_db()
    assert (row.status, row.attempts, row.claimed_at) == (Status.PENDING, 0, None)
    monkeypatch.undo()
    assert update_run(update_pk=row.pk) == "done"
    row.refresh_from_db()
    assert (row.status, row.attempts, row.stalls) == (Status.DONE, 1, 0)
    assert double.sent_texts(tg_bot.token, 680) == ["echo:x"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("echo_handler")
def test_a_death_during_a_webhook_update_is_counted_and_the_redelivery_finishes_it(
    double, tg_bot, monkeypatch
):
    """The webhook's row is inserted already claimed and stamped (one statement): a
    process dying in its handler leaves a stall, and Telegram's redelivery (it never
    got its 200) is handled once by update_run, which counts it."""
    from botplatform.telegram.batch import update_process

    update = double.message(tg_bot.token, 690, "hook")
    _crash_in_handler(monkeypatch)
    with pytest.raises(_Crash):
        update_process(bot_id=tg_bot.pk, update=update)
    connection.close()
    monkeypatch.undo()
    row = TelegramUpdate.objects.get(bot=tg_bot)
    assert (row.status, row.attempts, row.claimed_at is not None) == (Status.PENDING, 1, True)

    update_process(bot_id=tg_bot.pk, update=update)  # the redelivery
    row.refresh_from_db()
    assert (row.status, row.attempts, row.stalls) == (Status.DONE, 2, 1)
    assert double.sent_texts(tg_bot.token, 690) == ["echo:hook"]
    assert _handled(tg_bot, 690) == 1


@pytest.mark.usefixtures("echo_handler")
def test_with_the_fast_path_off_the_webhook_goes_through_update_run(
    double, tg_bot, settings, monkeypatch
):
    from botplatform.telegram import batch
    from botplatform.telegram.batch import update_process

    settings.TELEGRAM_BATCH_HANDLING = False
    monkeypatch.setattr(batch, "update_record_claimed", None)  # not called at all
    update_process(bot_id=tg_bot.pk, update=double.message(tg_bot.token, 695, "off"))
    row = TelegramUpdate.objects.get(bot=tg_bot)
    assert (row.status, row.attempts, row.claimed_at) == (Status.DONE, 1, None)
    assert double.sent_texts(tg_bot.token, 695) == ["echo:off"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("echo_handler")
def test_a_crash_between_the_replies_of_a_wave_of_one_resends_none_of_them(
    double, tg_bot, monkeypatch
):
    """A wave of one records delivery progress as update_run does: the reply already
    out is not sent again after a crash (a wave of several would re-send it)."""
    from botplatform.telegram import batch

    (row,) = _record(tg_bot, [double.message(tg_bot.token, 697, "twice")])
    real_send = batch.actions_send

    def dying_send(**kwargs):
        on_sent = kwargs["on_sent"]

        def dying(count: int) -> None:
            on_sent(count)
            raise _Crash

        real_send(**{**kwargs, "on_sent": dying})

    monkeypatch.setattr(batch, "actions_send", dying_send)
    with pytest.raises(_Crash):
        updates_run_batch(bot_id=tg_bot.pk, rows=[row])
    connection.close()
    monkeypatch.undo()
    row.refresh_from_db()
    assert (row.status, row.sent_count) == (Status.HANDLED, 1)

    assert update_run(update_pk=row.pk) == "done"
    assert double.sent_texts(tg_bot.token, 697) == ["echo1:twice", "echo2:twice"]
    assert _handled(tg_bot, 697) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("echo_handler")
def test_a_claim_taken_while_a_wave_finishes_finds_the_row_done_not_handled(double, tg_bot):
    """The fast path frees a wave's claims in the statement that marks its rows done
    (batch._finish): update_run claiming the row in that moment must wait for the done
    mark, not send the replies a second time."""
    import threading
    import time

    from botplatform.conversation import SendMessage, actions_to_json

    (row,) = _record(tg_bot, [double.message(tg_bot.token, 641, "hi")])
    TelegramUpdate.objects.filter(pk=row.pk).update(
        status=Status.HANDLED,
        chat_id=641,
        actions=actions_to_json([SendMessage(chat_id=641, text="only once")]),
    )
    finishing = other_connection(autocommit=False)
    outcome: list[str] = []

    def claim() -> None:
        try:
            outcome.append(update_run(update_pk=row.pk))
        finally:
            connection.close()  # this thread's own connection

    try:
        # The wave's done mark, written and not yet committed (its claim already free).
        finishing.execute(
            f"UPDATE {TelegramUpdate._meta.db_table} SET status = %s,"
            " sent_count = 1, done_at = now() WHERE id = %s",
            [Status.DONE, row.pk],
        )
        thread = threading.Thread(target=claim)
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive()  # waiting for the row, not sending
        finishing.commit()
        thread.join(10)
    finally:
        finishing.close()
    assert outcome == ["done"]
    assert double.sent_texts(tg_bot.token) == []


def _wal_syncs() -> int:
    """WAL flushes so far (this backend's pending counters included)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute("SELECT wal_sync FROM pg_stat_wal")
        return int(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("echo_handler")
def test_the_claim_stamp_and_the_done_marks_do_not_wait_for_a_wal_flush(
    double, tg_bot, monkeypatch
):
    """A lone update commits four times (record, claim, the wave, done): the record and
    the wave wait for their WAL flush; the claim's stamp and the done marks do not
    (journal.async_commit_item), which halves the flushes a lone update costs."""
    from botplatform.telegram import batch

    def waves(count: int, first_chat: int) -> int:
        before = _wal_syncs()
        for chat in range(first_chat, first_chat + count):
            rows = _record(tg_bot, [double.message(tg_bot.token, chat, "hi")])
            assert updates_run_batch(bot_id=tg_bot.pk, rows=rows).leftovers == []
        return _wal_syncs() - before

    waves(3, 700)  # warm: users created
    lean = waves(20, 710)
    monkeypatch.setattr(batch, "async_commit_item", lambda: "")
    full = waves(20, 740)
    print(f"WAL flushes for 20 lone updates: {lean} (all synchronous: {full})")
    assert full >= 20 * 3, full  # at least record, claim or done, and the wave
    assert lean <= full - 20 * 3 // 2, (lean, full)  # about 20 x 2 fewer
    assert {row.status for row in TelegramUpdate.objects.filter(bot=tg_bot)} == {Status.DONE}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("echo_handler")
def test_a_webhook_update_waits_for_one_wal_flush_and_is_durable_with_it(
    double, tg_bot, monkeypatch
):
    """The webhook's claimed insert does not wait for its flush: the wave's synchronous
    commit, before the webhook answers, flushes the WAL up to its own commit record,
    the insert's included. One flush a request instead of two."""
    from botplatform.telegram import batch, journal

    def requests(count: int, first_chat: int) -> int:
        before = _wal_syncs()
        for chat in range(first_chat, first_chat + count):
            update_process(bot_id=tg_bot.pk, update=double.message(tg_bot.token, chat, "hi"))
        return _wal_syncs() - before

    requests(3, 800)  # warm: users created
    lean = requests(20, 810)
    monkeypatch.setattr(journal, "async_commit_item", lambda: "")
    monkeypatch.setattr(batch, "async_commit_item", lambda: "")
    full = requests(20, 840)
    print(f"WAL flushes for 20 webhook updates: {lean} (all synchronous: {full})")
    assert full >= 20 * 3, full  # the insert, the wave and the done marks
    assert lean <= 20 + 5, (lean, full)  # the wave's, about one each
    assert {row.status for row in TelegramUpdate.objects.filter(bot=tg_bot)} == {Status.DONE}
    assert double.sent_texts(tg_bot.token).count("echo:hi") == 43


def _done_marks_plans() -> dict[bool, tuple[int, int]]:
    """(generic, custom) plans of this connection's prepared done-marks statements (the
    driver prepares a statement at its fifth run, then the server counts its plans),
    by whether the claims' array is hidden."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT statement LIKE '%%unnest((SELECT%%', generic_plans, custom_plans"
            " FROM pg_prepared_statements WHERE statement LIKE '%%WITH done AS%%'"
        )
        return {hidden: (generic, custom) for hidden, generic, custom in cursor.fetchall()}


def _done_marks_plan(pk: int) -> str:
    """The plan the connection's prepared done-marks statement runs for row ``pk``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name FROM pg_prepared_statements WHERE statement LIKE '%%WITH done AS%%'"
        )
        (name,) = cursor.fetchone()
        cursor.execute(
            f"EXPLAIN (FORMAT JSON) EXECUTE {name}('done', now(), '{{{pk}}}', 'handled',"
            " '{1}', 1)"
        )
        return json.dumps(cursor.fetchone()[0])


@pytest.mark.usefixtures("echo_handler")
def test_the_done_marks_keep_one_plan_that_looks_rows_up_by_their_key(double, tg_bot):
    """The done marks of a lone update ran every time on a plan made for its values:
    the handled status proved the condition of the open rows' index, which the
    statistics of a mostly finished journal count as nearly empty, so every run was
    planned again and scanned that index (all its dead entries too, 0.4 ms on the
    benchmark's journal). With every value hidden the server keeps one generic plan,
    which finds the rows by their primary key. The same statement with the values in
    sight is the control."""
    from botplatform.telegram import batch

    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO botplatform_telegramupdate (bot_id, update_id, chat_id, payload,"
            " status, actions, sent_count, attempts, stalls, note, received_at, done_at)"
            " SELECT %s, -n, 1, '{}', 'done', '[]', 0, 1, 0, '', now(), now()"
            " FROM generate_series(1, 3000) AS n",
            [tg_bot.pk],
        )
        cursor.execute("ANALYZE botplatform_telegramupdate")
    for n in range(12):
        (row,) = _record(tg_bot, [double.message(tg_bot.token, 670, f"m{n}")])
        assert updates_run_batch(bot_id=tg_bot.pk, rows=[row]).leftovers == []
    assert TelegramUpdate.objects.filter(bot=tg_bot, status=Status.DONE).count() == 3012
    # 12 runs: the driver prepares the statement for the last 7, the server plans the
    # first 5 of those for their values and then keeps the generic plan
    assert _done_marks_plans()[True] == (2, 5)
    plan = _done_marks_plan(row.pk)
    assert "botplatform_telegramupdate_pkey" in plan and "tgupdate_open_idx" not in plan, plan

    control = batch._FINISH_SQL.format(
        table=batch._table(), any_ids="ANY(%s)", status="%s", keys="%s::int[]", async_commit=""
    )
    with connection.cursor() as cursor:
        for _ in range(12):
            cursor.execute(control, [Status.DONE, row.done_at, [row.pk], Status.HANDLED, [1], 1])
    assert _done_marks_plans()[False] == (0, 7)  # planned for its values on every run
