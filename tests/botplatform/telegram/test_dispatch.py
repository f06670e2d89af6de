from __future__ import annotations

import logging
from collections import Counter

import pytest

from botplatform.models import TelegramUpdate
from botplatform.telegram.batch import update_process
from botplatform.telegram.dispatch import update_run
from botplatform.telegram.journal import updates_record
from tests.botplatform.telegram.conftest import SILENT
from users.models import BotUser, UserVariable

pytestmark = pytest.mark.usefixtures("echo_handler")


def _handled(bot, telegram_id: int) -> int:
    user = BotUser.objects.get(project=bot.project, telegram_id=telegram_id)
    return UserVariable.objects.get(user=user, key="handled").value


def test_message_is_handled_and_answered(double, tg_bot):
    update = double.message(tg_bot.token, 501, "hello")
    update_process(bot_id=tg_bot.pk, update=update)
    assert double.sent_texts(tg_bot.token) == ["echo:hello"]
    row = TelegramUpdate.objects.get(bot=tg_bot, update_id=update["update_id"])
    assert row.status == TelegramUpdate.Status.DONE
    assert row.sent_count == 1
    assert row.chat_id == 501


def test_duplicate_delivery_is_handled_once(double, tg_bot):
    update = double.message(tg_bot.token, 502, "once")
    for _ in range(3):
        update_process(bot_id=tg_bot.pk, update=dict(update))
    assert double.sent_texts(tg_bot.token) == ["echo:once"]
    assert _handled(tg_bot, 502) == 1
    assert TelegramUpdate.objects.filter(bot=tg_bot).count() == 1


def test_command_is_parsed_with_payload(double, tg_bot):
    update_process(bot_id=tg_bot.pk, update=double.command(tg_bot.token, 503, "/start@x ref_ab12"))
    assert double.sent_texts(tg_bot.token) == ["cmd:start:ref_ab12"]
    markup = double.calls_of("sendMessage")[0].params["reply_markup"]
    assert '"callback_data": "go"' in markup


def test_every_callback_query_is_answered_even_when_the_handler_says_nothing(
    double, tg_bot, settings
):
    settings.TELEGRAM_EVENT_HANDLER = SILENT
    update = double.callback(tg_bot.token, 504, "noop")
    update_process(bot_id=tg_bot.pk, update=update)
    answers = double.calls_of("answerCallbackQuery")
    assert [call.params["callback_query_id"] for call in answers] == [
        update["callback_query"]["id"]
    ]


def test_callback_answer_from_the_handler_is_not_doubled(double, tg_bot):
    update_process(bot_id=tg_bot.pk, update=double.callback(tg_bot.token, 505, "buy"))
    assert len(double.calls_of("answerCallbackQuery")) == 1
    assert double.calls_of("answerCallbackQuery")[0].params["text"] == "ok"
    assert double.sent_texts(tg_bot.token) == ["pressed:buy"]


def test_malformed_updates_are_logged_and_skipped(double, tg_bot, caplog):
    caplog.set_level(logging.INFO)
    update_process(bot_id=tg_bot.pk, update={"message": {"text": "no id"}})
    update_process(bot_id=tg_bot.pk, update={"update_id": 77, "message": {"text": 5}})
    update_process(bot_id=tg_bot.pk, update={"update_id": 78, "edited_message": {}})
    assert double.calls_of("sendMessage") == []
    rows = {row.update_id: row for row in TelegramUpdate.objects.filter(bot=tg_bot)}
    assert set(rows) == {77, 78}
    assert rows[77].status == rows[78].status == TelegramUpdate.Status.SKIPPED
    assert rows[77].note.startswith("MalformedUpdate")
    assert "no update_id" in caplog.text
    assert "update 77 skipped" in caplog.text


def test_handler_failure_is_retried_then_the_user_gets_the_fallback(double, tg_bot, settings):
    settings.TELEGRAM_MAX_ATTEMPTS = 2
    (row,) = updates_record(bot_id=tg_bot.pk, updates=[double.message(tg_bot.token, 506, "boom")])
    assert update_run(update_pk=row.pk) == "retry"
    row.refresh_from_db()
    assert row.status == TelegramUpdate.Status.PENDING
    assert "exploded" in row.note
    # Nothing of the failed attempt stuck (the handler's counter rolled back).
    assert not UserVariable.objects.filter(key="handled").exists()
    assert update_run(update_pk=row.pk) == "done"
    row.refresh_from_db()
    assert row.status == TelegramUpdate.Status.FAILED
    assert double.sent_texts(tg_bot.token) == [tg_bot.project.fallback_message]


def test_replies_survive_a_telegram_outage_without_handling_twice(double, tg_bot, settings):
    """The outbox: a reply that could not be sent is resent later; the handler ran once."""
    settings.TELEGRAM_SEND_MAX_WAIT = 1
    double.fail("sendMessage", 502, times=50)
    (row,) = updates_record(bot_id=tg_bot.pk, updates=[double.message(tg_bot.token, 507, "hi")])
    assert update_run(update_pk=row.pk) == "retry"
    row.refresh_from_db()
    assert row.status == TelegramUpdate.Status.HANDLED
    double.faults.clear()
    assert update_run(update_pk=row.pk) == "done"
    assert update_run(update_pk=row.pk) == "done"
    assert double.sent_texts(tg_bot.token) == ["echo:hi"]
    assert _handled(tg_bot, 507) == 1


def test_incoming_rate_limit_tells_the_user_once_then_ignores(double, tg_bot):
    project = tg_bot.project
    project.user_rate_limit_per_minute = 3
    project.save(update_fields=["user_rate_limit_per_minute"])
    for i in range(7):
        update_process(bot_id=tg_bot.pk, update=double.message(tg_bot.token, 508, f"m{i}"))
    update_process(bot_id=tg_bot.pk, update=double.message(tg_bot.token, 509, "other user"))
    texts = Counter(double.sent_texts(tg_bot.token, 508))
    assert texts == Counter(
        {"echo:m0": 1, "echo:m1": 1, "echo:m2": 1, project.rate_limited_message: 1}
    )
    assert double.sent_texts(tg_bot.token, 509) == ["echo:other user"]
    assert _handled(tg_bot, 508) == 3
    notes = list(
        TelegramUpdate.objects.filter(chat_id=508)
        .order_by("update_id")
        .values_list("note", flat=True)
    )
    assert notes == ["", "", "", "rate limited (notify)", *["rate limited (ignore)"] * 3]


def test_user_who_blocked_the_bot_is_marked_and_then_skipped(double, tg_bot):
    from botplatform.conversation import SendMessage
    from botplatform.telegram.sender import actions_deliver

    double.block(510)
    update_process(bot_id=tg_bot.pk, update=double.message(tg_bot.token, 510, "hi"))
    user = BotUser.objects.get(project=tg_bot.project, telegram_id=510)
    assert user.is_blocked
    attempts = len(double.calls_of("sendMessage", ok=False))
    actions_deliver(bot_id=tg_bot.pk, chat_id=510, actions=[SendMessage(chat_id=510, text="later")])
    assert len(double.calls_of("sendMessage", ok=False)) == attempts  # not even tried
    row = TelegramUpdate.objects.get(chat_id=510)
    assert row.status == TelegramUpdate.Status.DONE


def test_transport_overhead_per_update_is_a_handful_of_queries(
    double, tg_bot, settings, django_assert_max_num_queries
):
    settings.TELEGRAM_EVENT_HANDLER = "tests.botplatform.telegram.handlers.noop_handle"
    update_process(bot_id=tg_bot.pk, update=double.message(tg_bot.token, 520, "warm"))
    # insert, claim, attempt, lock + load, outbox, done, unclaim: 7 statements, plus 4
    # savepoint statements only because the test itself runs inside a transaction.
    with django_assert_max_num_queries(11):
        update_process(bot_id=tg_bot.pk, update=double.message(tg_bot.token, 520, "count"))
    assert double.sent_texts(tg_bot.token) == ["hi", "hi"]
    assert TelegramUpdate.objects.filter(status="done", sent_count=1).count() == 2


def test_old_finished_updates_are_pruned_open_ones_kept(double, tg_bot):
    from datetime import timedelta

    from django.utils import timezone

    from botplatform.telegram.tasks import updates_prune_task

    rows = updates_record(
        bot_id=tg_bot.pk,
        updates=[double.message(tg_bot.token, 530, f"m{i}") for i in range(3)],
    )
    update_run(update_pk=rows[0].pk)
    update_run(update_pk=rows[1].pk)
    TelegramUpdate.objects.filter(pk__in=[rows[0].pk, rows[2].pk]).update(
        received_at=timezone.now() - timedelta(days=30)
    )
    assert updates_prune_task() == 1  # old and done; the recent done one and the open one stay
    assert set(TelegramUpdate.objects.values_list("pk", flat=True)) == {rows[1].pk, rows[2].pk}
