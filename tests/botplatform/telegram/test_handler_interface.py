"""The one interface between transport and application (botplatform/telegram/handler.py).

A handler that is not the engine at all, named by ``TELEGRAM_EVENT_HANDLER``, gets every
update through its batch, on both paths; a 403 is reported to it, not written into
the ledger by the transport.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from botplatform.conversation import SendMessage
from botplatform.telegram.batch import update_process, updates_run_batch
from botplatform.telegram.dispatch import update_run
from botplatform.telegram.journal import updates_record
from botplatform.telegram.sender import actions_deliver

CALLS: list[tuple] = []
BLOCKED: set[int] = set()


class _Batch:
    def __init__(self, ahead: bool) -> None:
        self.ahead = ahead

    def lock_sql(self):
        return ("SELECT 1", []) if self.ahead else None

    def locked(self) -> None:
        CALLS.append(("locked",))

    def read_ahead(self, *, bot, updates, joined=None) -> None:
        CALLS.append(("read_ahead", sorted(parsed.chat_id for parsed in updates)))

    def handle(self, *, bot, parsed):
        CALLS.append(("handle", parsed.chat_id))
        return [SendMessage(chat_id=parsed.chat_id, text=f"plain:{parsed.event.text}")]

    def writes(self):
        CALLS.append(("writes",))
        return []


class PlainHandler:
    """Knows nothing of the engine or the ledger."""

    @contextmanager
    def batch(self, *, bot_id, chats, ahead=False):
        CALLS.append(("batch", sorted(chat for chat, _type, _sender in chats), ahead))
        yield _Batch(ahead)

    def chat_blocked(self, *, bot, chat_id) -> None:
        CALLS.append(("chat_blocked", chat_id))
        BLOCKED.add(chat_id)

    def chat_is_blocked(self, *, bot, chat_id) -> bool:
        return chat_id in BLOCKED


handler = PlainHandler()


@pytest.fixture(autouse=True)
def _plain(settings):
    settings.TELEGRAM_EVENT_HANDLER = f"{__name__}.handler"
    CALLS.clear()
    BLOCKED.clear()


def test_the_batch_path_goes_through_the_configured_handlers_batch(double, tg_bot):
    rows = updates_record(
        bot_id=tg_bot.pk,
        updates=[double.message(tg_bot.token, chat, f"m{chat}") for chat in (801, 802, 803)],
    )
    result = updates_run_batch(bot_id=tg_bot.pk, rows=rows)
    assert result.leftovers == []
    assert CALLS == [
        ("batch", [801, 802, 803], True),
        ("locked",),
        ("read_ahead", [801, 802, 803]),
        ("handle", 801),
        ("handle", 802),
        ("handle", 803),
        ("writes",),
    ]
    assert double.sent_texts(tg_bot.token) == ["plain:m801", "plain:m802", "plain:m803"]


def test_a_webhook_update_is_a_wave_of_one_through_the_same_handler(double, tg_bot):
    update_process(bot_id=tg_bot.pk, update=double.message(tg_bot.token, 811, "hi"))
    assert CALLS == [
        ("batch", [811], True),
        ("locked",),
        ("read_ahead", [811]),
        ("handle", 811),
        ("writes",),
    ]
    assert double.sent_texts(tg_bot.token) == ["plain:hi"]


def test_update_run_opens_a_batch_of_one_without_read_ahead(double, tg_bot):
    (row,) = updates_record(bot_id=tg_bot.pk, updates=[double.message(tg_bot.token, 812, "hi")])
    assert update_run(update_pk=row.pk) == "done"
    assert CALLS == [("batch", [812], False), ("handle", 812)]
    assert double.sent_texts(tg_bot.token) == ["plain:hi"]


def test_a_403_is_reported_to_the_handler_which_then_decides_what_is_skipped(double, tg_bot):
    double.block(821)
    update_process(bot_id=tg_bot.pk, update=double.message(tg_bot.token, 821, "hi"))
    assert ("chat_blocked", 821) in CALLS
    tries = len(double.calls_of("sendMessage", ok=False))
    actions_deliver(bot_id=tg_bot.pk, chat_id=821, actions=[SendMessage(chat_id=821, text="x")])
    assert len(double.calls_of("sendMessage", ok=False)) == tries  # skipped, not tried
