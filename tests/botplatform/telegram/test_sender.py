from __future__ import annotations

import threading
import time

import pytest
from django.db import connection
from django.utils import timezone

from botplatform import cache as keys
from botplatform import ratelimit
from botplatform.conversation import AnswerCallback, Button, EditMessage, SendMessage
from botplatform.models import Bot, DeferredSend
from botplatform.telegram.sender import (
    actions_deliver,
    actions_from_json,
    actions_to_json,
    deferred_send_run,
    deferred_sends_due,
    text_split,
)


def _bot(tg_bot) -> Bot:
    return Bot.objects.select_related("project").get(pk=tg_bot.pk)


def test_long_text_is_split_below_4096_without_losing_text(double, tg_bot):
    paragraph = "word " * 300 + "\n"
    text = paragraph * 10  # ~15,000 characters
    actions_deliver(bot_id=tg_bot.pk, chat_id=601, actions=[SendMessage(chat_id=601, text=text)])
    sent = double.sent_texts(tg_bot.token)
    assert len(sent) == 5  # two 1,501-character paragraphs per message, cut at line breaks
    assert all(len(chunk) <= 4096 for chunk in sent)
    assert "".join(sent).replace("\n", "").replace(" ", "") == text.replace("\n", "").replace(
        " ", ""
    )


def test_split_never_cuts_an_html_tag_or_entity():
    text = "a" * 4090 + "<b>bold</b> &amp; more"
    chunks = text_split(text)
    assert chunks[0] == "a" * 4090
    assert chunks[1].startswith("<b>")
    text = "a" * 4093 + "&amp;"
    assert text_split(text)[1] == "&amp;"


def test_actions_survive_the_json_outbox():
    actions = [
        SendMessage(
            chat_id=1, text="x", buttons=((Button("A", "a"), Button("U", url="https://x")),)
        ),
        SendMessage(chat_id=1, text="y", reply_keyboard=(("One", "Two"),)),
        EditMessage(chat_id=1, message_id=5, text="z"),
        AnswerCallback(callback_query_id="q", text="t", show_alert=True),
    ]
    assert actions_from_json(actions_to_json(actions)) == actions


def test_edit_of_a_missing_message_sends_it_anew_and_not_modified_is_fine(double, tg_bot):
    actions_deliver(bot_id=tg_bot.pk, chat_id=602, actions=[SendMessage(chat_id=602, text="v1")])
    message_id = max(message_id for (_chat, message_id) in double.messages)
    actions_deliver(
        bot_id=tg_bot.pk,
        chat_id=602,
        actions=[
            EditMessage(chat_id=602, message_id=message_id, text="v1"),  # not modified
            EditMessage(chat_id=602, message_id=message_id, text="v2"),
            EditMessage(chat_id=602, message_id=99999, text="gone"),  # deleted message
        ],
    )
    assert double.messages[(602, message_id)]["text"] == "v2"
    assert double.sent_texts(tg_bot.token, 602) == ["v1", "gone"]


def test_callback_data_over_64_bytes_is_never_sent(double, tg_bot):
    buttons = ((Button("ok", "fine"), Button("too long", "x" * 65)),)
    actions_deliver(
        bot_id=tg_bot.pk, chat_id=603, actions=[SendMessage(chat_id=603, text="m", buttons=buttons)]
    )
    markup = double.calls_of("sendMessage")[0].params["reply_markup"]
    assert "fine" in markup
    assert "x" * 65 not in markup


def test_429_is_honoured_and_the_message_is_sent_later(double, tg_bot):
    double.fail("sendMessage", 429, retry_after=1)
    actions_deliver(bot_id=tg_bot.pk, chat_id=604, actions=[SendMessage(chat_id=604, text="late")])
    calls = double.calls_of("sendMessage", ok=False)
    assert [call.status for call in calls] == [429, 200]
    assert calls[1].at - calls[0].at >= 0.95  # waited retry_after before trying again
    assert double.sent_texts(tg_bot.token) == ["late"]


def test_429_beyond_the_allowed_wait_goes_to_a_delayed_task(
    double, tg_bot, settings, django_capture_on_commit_callbacks
):
    from botplatform.celery import app

    settings.TELEGRAM_SEND_MAX_WAIT = 0
    double.fail("sendMessage", 429, retry_after=1)
    # Run the task in-process (eager): its countdown is skipped, but the point is that
    # the message is handed over to a task, not dropped.
    saved = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=True):
            actions_deliver(
                bot_id=tg_bot.pk,
                chat_id=605,
                actions=[SendMessage(chat_id=605, text="x"), SendMessage(chat_id=605, text="y")],
            )
    finally:
        app.conf.task_always_eager = saved
    assert [c.status for c in double.calls_of("sendMessage", ok=False)] == [429, 200, 200]
    assert double.sent_texts(tg_bot.token) == ["x", "y"]
    assert not DeferredSend.objects.exists()


def test_deferred_replies_wait_in_the_database_until_the_sweep_sends_them_once(
    double, tg_bot, settings, django_capture_on_commit_callbacks
):
    """The hand-off task is lost (broker down, worker killed): nothing is dropped."""
    settings.TELEGRAM_SEND_MAX_WAIT = 0
    double.fail("sendMessage", 429, retry_after=1)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        actions_deliver(
            bot_id=tg_bot.pk,
            chat_id=608,
            actions=[SendMessage(chat_id=608, text="a"), SendMessage(chat_id=608, text="b")],
        )
    assert len(queued) == 1  # the task that would have sent them; never run here
    deferred = DeferredSend.objects.get()
    assert (deferred.chat_id, [a["text"] for a in deferred.actions]) == (608, ["a", "b"])
    assert double.sent_texts(tg_bot.token) == []

    assert deferred_sends_due() == []  # not before its time
    DeferredSend.objects.update(due_at=timezone.now())
    assert deferred_sends_due() == [deferred.pk]
    assert deferred_send_run(deferred_id=deferred.pk) is True
    assert deferred_send_run(deferred_id=deferred.pk) is False  # a late duplicate task
    assert double.sent_texts(tg_bot.token) == ["a", "b"]
    assert not DeferredSend.objects.exists()


def test_a_deferred_send_that_keeps_failing_is_retried_then_dropped(double, tg_bot, monkeypatch):
    from botplatform.telegram import sender

    deferred = DeferredSend.objects.create(
        bot=tg_bot, chat_id=609, actions=[{"type": "SendMessage"}], due_at=timezone.now()
    )
    assert deferred_send_run(deferred_id=deferred.pk) is False  # unreadable action
    deferred.refresh_from_db()
    assert deferred.attempts == 1 and deferred.due_at > timezone.now()
    DeferredSend.objects.filter(pk=deferred.pk).update(
        attempts=sender.DEFERRED_SEND_MAX_ATTEMPTS - 1
    )
    assert deferred_send_run(deferred_id=deferred.pk) is False
    assert not DeferredSend.objects.filter(pk=deferred.pk).exists()


def test_5xx_is_retried_with_backoff(double, tg_bot):
    double.fail("sendMessage", 502, times=2)
    actions_deliver(bot_id=tg_bot.pk, chat_id=606, actions=[SendMessage(chat_id=606, text="ok")])
    assert [c.status for c in double.calls_of("sendMessage", ok=False)] == [502, 502, 200]


def test_401_marks_the_bot_unauthorized_with_a_masked_token(double, tg_bot, caplog):
    double.revoke(tg_bot.token)
    actions_deliver(bot_id=tg_bot.pk, chat_id=607, actions=[SendMessage(chat_id=607, text="x")])
    tg_bot.refresh_from_db()
    assert tg_bot.status == Bot.Status.UNAUTHORIZED
    assert tg_bot.token_masked in tg_bot.status_message
    assert tg_bot.token not in tg_bot.status_message
    assert tg_bot.token not in caplog.text


class SlotDecisions:
    """The send limiter's decisions (``ratelimit.send_slot_wait``, still doing its real
    work on Redis), each bracketed by the clock read just before and just after it.

    The limiter decides on the caller's clock (``time.time()``, passed to its Lua
    script), so a grant lies inside its bracket. When ``limit + 1`` grants have brackets that all fit in
    less than the window, the limit was broken, whatever the machine's load. Arrival
    times at the double prove nothing either way: a request granted early can arrive
    late, right next to the following one, on a busy machine.
    """

    def __init__(self, monkeypatch, *, chat_id: int | None = None) -> None:
        self.chat_id = chat_id
        self.decisions: list[tuple[float, float, float]] = []  # (before, after, wait)
        self._real = ratelimit.send_slot_wait
        monkeypatch.setattr(ratelimit, "send_slot_wait", self._observed)

    def _clock(self) -> float:
        return time.time()

    def _observed(self, *, bot_id: int, chat_id: int | None, **kwargs) -> float:
        before = self._clock()
        wait = self._real(bot_id=bot_id, chat_id=chat_id, **kwargs)
        if self.chat_id is None or chat_id == self.chat_id:
            self.decisions.append((before, self._clock(), wait))  # list.append: thread-safe
        return wait

    @property
    def grants(self) -> list[tuple[float, float]]:
        return [(before, after) for before, after, wait in self.decisions if wait <= 0]

    def limit_held(self, limit: int, window: float) -> bool:
        """The GCRA bound held: no run of grants provably holds more than ``limit``
        (the burst) plus what refilled over its span at ``limit / window`` (a grant
        lies inside its bracket, so its span is at most the brackets'; Redis's clock
        in the script is read to the microsecond, the limit rounds waits up to whole
        milliseconds: a 1 % margin)."""
        grants = sorted(self.grants)
        for i in range(len(grants)):
            for j in range(i + limit, len(grants)):
                span = max(after for _b, after in grants[i : j + 1]) - grants[i][0]
                if j - i + 1 > limit + span * 1.01 * limit / window:
                    return False
        return True


@pytest.mark.django_db(transaction=True)
def test_bot_send_rate_is_shared_by_concurrent_senders(double, tg_bot, monkeypatch):
    """Ten threads, ten chats, one bot allowed 4 messages a second: they all draw from
    the same limit. A limit per sender (or per chat) would grant ten slots at once."""
    project = tg_bot.project
    project.bot_send_rate_per_second = 4
    project.save(update_fields=["bot_send_rate_per_second"])
    slots = SlotDecisions(monkeypatch)

    def send(chat: int) -> None:
        try:
            actions_deliver(
                bot_id=tg_bot.pk,
                chat_id=chat,
                actions=[SendMessage(chat_id=chat, text=f"m{chat}")],
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(700 + i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(double.calls_of("sendMessage")) == 10
    assert len(slots.grants) == 10  # one slot per message, none sent without one
    # 4 at once, then one every 250 ms: never more than 4 + 4/s over any span.
    assert slots.limit_held(4, 1.0)
    grants = sorted(slots.grants)
    assert grants[4][1] - grants[0][0] >= 0.25 * 0.99  # the 5th waited for its slot


def test_chat_send_rate_spaces_messages_to_one_chat(double, tg_bot, settings, monkeypatch):
    settings.TELEGRAM_CHAT_SEND_LIMIT = 1
    settings.TELEGRAM_CHAT_SEND_WINDOW_MS = 300
    slots = SlotDecisions(monkeypatch, chat_id=620)
    actions_deliver(
        bot_id=tg_bot.pk,
        chat_id=620,
        actions=[SendMessage(chat_id=620, text=str(i)) for i in range(4)],
    )
    assert len(double.calls_of("sendMessage")) == 4
    assert len(slots.grants) == 4
    assert slots.limit_held(1, 0.3)


@pytest.mark.django_db
def test_gcra_admits_exactly_the_burst_under_contention():
    admitted = []
    barrier = threading.Barrier(16)

    def hit() -> None:
        barrier.wait()
        if ratelimit.rate_hit([("rate_limit:test:contention:1s", 5, 60_000)]) == 0:
            admitted.append(1)

    threads = [threading.Thread(target=hit) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 5
    wait = ratelimit.rate_hit([("rate_limit:test:contention:1s", 5, 60_000)])
    assert 0 < wait <= 12_000  # one emission interval (60 s / 5) at most


def test_gcra_refills_one_slot_per_emission_interval():
    key = "rate_limit:test:edge:1s"
    for _ in range(3):
        assert ratelimit.rate_hit([(key, 3, 600)]) == 0
    wait = ratelimit.rate_hit([(key, 3, 600)])
    assert 0 < wait <= 200  # T = 600 ms / 3

    time.sleep(0.25)  # one slot back (a fixed window would not have reset yet)
    assert ratelimit.rate_hit([(key, 3, 600)]) == 0
    assert ratelimit.rate_hit([(key, 3, 600)]) > 0  # but only one


def test_gcra_keeps_one_string_key_with_a_ttl():
    client = keys.redis_client()
    key = "rate_limit:test:shape:1s"
    assert ratelimit.rate_hit([(key, 10, 1000)]) == 0
    assert client.type(key) == b"string"
    # Kept until its TAT has passed, plus a second's margin for other runners' clocks.
    assert 1000 < client.pttl(key) <= 1100


def test_in_process_fallback_has_the_same_semantics():
    plan = [([("local:test", 2, 60_000)], False)]
    assert ratelimit._local_plan(plan) == [0]
    assert ratelimit._local_plan(plan) == [0]
    assert ratelimit._local_plan(plan)[0] > 0


def test_a_slow_telegram_times_out_and_the_message_still_goes_out(double, tg_bot, settings):
    settings.TELEGRAM_HTTP_TIMEOUT = 1
    double.slow("sendMessage", 1.5, times=1)
    actions_deliver(bot_id=tg_bot.pk, chat_id=630, actions=[SendMessage(chat_id=630, text="t")])
    calls = double.calls_of("sendMessage")
    # The first call timed out on our side (Telegram may still have delivered it: a
    # timeout is the one case a message can arrive twice), the retry got through.
    assert len(calls) == 2
    assert calls[1].at - calls[0].at >= 1.0


def test_rate_limits_fall_back_to_the_process_when_redis_is_unreachable(monkeypatch):
    """A real client to a port nobody listens on: connection refused, limits still hold."""
    import socket

    import redis

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    dead = redis.Redis(host="127.0.0.1", port=dead_port, socket_connect_timeout=0.2)
    monkeypatch.setattr(ratelimit.keys, "redis_client", lambda: dead)
    key = "rate_limit:test:redis_down:1s"
    assert [ratelimit.rate_hit([(key, 2, 60_000)]) == 0 for _ in range(3)] == [
        True,
        True,
        False,
    ]


def test_broken_html_goes_out_as_plain_text_rather_than_not_at_all(double, tg_bot):
    actions_deliver(
        bot_id=tg_bot.pk,
        chat_id=640,
        actions=[
            SendMessage(chat_id=640, text="<b>Balance</b>: 5 &amp; more"),
            SendMessage(chat_id=640, text="Spend if 5 < 10"),
        ],
    )
    calls = double.calls_of("sendMessage", ok=False)
    assert [(c.status, c.params.get("parse_mode")) for c in calls] == [
        (200, "HTML"),
        (400, "HTML"),
        (200, None),
    ]
    assert double.sent_texts(tg_bot.token) == ["<b>Balance</b>: 5 &amp; more", "Spend if 5 < 10"]
