"""Group chats: one conversation per member, through the real Telegram path.

Two members of one group talk to the demo bot (Bot API double, journal, dispatch,
engine, ledger). One member pressing the other's "Spend 100" button must not be
charged, nor move the other's conversation; the batch path must lock and read ahead
the same sessions the engine uses.
"""

from __future__ import annotations

import itertools
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import given, settings
from hypothesis import strategies as st

from botplatform.telegram.batch import updates_run_batch
from botplatform.telegram.client import api
from botplatform.telegram.dispatch import update_run
from botplatform.telegram.journal import updates_record
from botplatform.telegram.updates import (
    MalformedUpdate,
    UnsupportedUpdate,
    update_chat_id,
    update_chat_type,
    update_parse,
    update_sender_id,
)
from tests.botplatform.telegram.test_batch import demo_bot  # noqa: F401  (fixture)
from users.models import BonusTransaction, BotUser
from workflows.models import WorkflowExecution
from workflows.services import session_key_default, session_key_for_chat

GROUP = -1001234567
ANN, BOB = 9101, 9102
_message_ids = itertools.count(50_000)


def _sender(user_id: int) -> dict:
    return {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"}


def _group_command(double, token: str, user_id: int, text: str) -> None:
    double.enqueue(
        token,
        {
            "message": {
                "message_id": next(_message_ids),
                "from": _sender(user_id),
                "chat": {"id": GROUP, "type": "supergroup", "title": "Friends"},
                "date": int(time.time()),
                "text": text,
                "entities": [{"type": "bot_command", "offset": 0, "length": len(text)}],
            }
        },
    )


def _button(double, message_id: int, label: str) -> str:
    """The callback data of the button containing ``label`` on a message in the group."""
    message = double.messages[(GROUP, message_id)]
    return next(
        button["callback_data"]
        for row in message["reply_markup"]["inline_keyboard"]
        for button in row
        if label in button["text"]
    )


def _group_press(double, token: str, user_id: int, data: str, message_id: int) -> None:
    """``user_id`` presses a button (its callback ``data``) on a message in the group."""
    message = double.messages[(GROUP, message_id)]
    double.enqueue(
        token,
        {
            "callback_query": {
                "id": f"cq-{next(_message_ids)}",
                "from": _sender(user_id),
                "chat_instance": "group",
                "data": data,
                "message": {
                    "message_id": message["message_id"],
                    "from": {"id": 1, "is_bot": True, "first_name": "Bot"},
                    "chat": {"id": GROUP, "type": "supergroup", "title": "Friends"},
                    "date": int(time.time()),
                    "text": message["text"],
                },
            }
        },
    )


class _Chat:
    """Fetch what the double queued and handle it one by one or as batches."""

    def __init__(self, double, bot, *, batch: bool) -> None:
        self.double, self.bot, self.batch = double, bot, batch
        self.offset: int | None = None
        self.single_locks = 0

    def run(self) -> None:
        updates = api().get_updates(self.bot.token, offset=self.offset, limit=100)
        self.offset = max(u["update_id"] for u in updates) + 1
        rows = updates_record(bot_id=self.bot.pk, updates=updates)
        leftovers = [row.pk for row in rows]
        if self.batch:
            with CaptureQueriesContext(connection) as queries:
                leftovers = updates_run_batch(bot_id=self.bot.pk, rows=rows).leftovers
            # Every session was locked with its wave: none locked again one by one.
            self.single_locks += sum(
                q["sql"].startswith("SELECT pg_advisory_xact_lock(") for q in queries
            )
        for pk in leftovers:
            assert update_run(update_pk=pk) == "done"


@pytest.mark.parametrize("batch", [False, True], ids=["one-by-one", "batch"])
def test_a_member_cannot_press_another_members_spend_button(double, demo_bot, batch):  # noqa: F811
    token = demo_bot.token
    chat = _Chat(double, demo_bot, batch=batch)
    _group_command(double, token, ANN, "/start")
    chat.run()
    ann = BotUser.objects.get(project=demo_bot.project, telegram_id=ANN)
    ann_menu = WorkflowExecution.objects.get(status="waiting", user=ann)
    menu_id = double.last_message[GROUP]
    assert double.messages[(GROUP, menu_id)]["text"].startswith("👋 Welcome")
    # The group is not stored as Ann's chat: a broadcast goes to her private chat.
    assert (ann.chat_id, session_key_default(bot=demo_bot, user=ann)) == (
        ANN,
        f"{demo_bot.pk}:{ANN}",
    )
    spend = _button(double, menu_id, "Spend")
    before = dict(ann_menu.context)

    # Bob (new here: the welcome bonus) presses "Spend 100" on Ann's menu, twice over
    # with a /start of his own in between.
    _group_press(double, token, BOB, spend, menu_id)
    _group_command(double, token, BOB, "/start")
    chat.run()
    _group_press(double, token, BOB, spend, menu_id)
    chat.run()

    answers = double.calls_of("answerCallbackQuery", token)
    assert [a.params.get("text") for a in answers] == [demo_bot.project.stale_button_message] * 2
    bob = BotUser.objects.get(project=demo_bot.project, telegram_id=BOB)
    ann.refresh_from_db()
    assert (ann.balance, bob.balance) == (100, 100)
    assert not BonusTransaction.objects.filter(kind="spend").exists()
    # Ann's conversation is untouched; Bob has a menu of his own.
    ann_menu.refresh_from_db()
    assert ann_menu.status == "waiting" and ann_menu.context == before
    assert "spent" not in double.messages[(GROUP, menu_id)]["text"]
    assert WorkflowExecution.objects.filter(status="waiting", user=bob).count() == 1

    # Ann presses the same button: her conversation goes on, she is charged.
    _group_press(double, token, ANN, spend, menu_id)
    chat.run()
    ann.refresh_from_db()
    bob.refresh_from_db()
    assert (ann.balance, bob.balance) == (0, 100)
    assert "100 bonuses spent" in double.messages[(GROUP, menu_id)]["text"]
    assert BonusTransaction.objects.filter(kind="spend").count() == 1
    assert chat.single_locks == 0

    # A session per member in a group; Ann's private chat keeps the key it always had
    # (waits from before this change still match).
    assert ann_menu.session_key == f"{demo_bot.pk}:{GROUP}:{ANN}"
    double.command(token, ANN, "/start")
    chat.run()
    private = WorkflowExecution.objects.filter(user=ann, status="waiting").exclude(
        session_key=ann_menu.session_key
    )
    assert [e.session_key for e in private] == [f"{demo_bot.pk}:{ANN}"]


def test_the_parser_reports_the_chat_type():
    update = {
        "update_id": 5,
        "message": {
            "message_id": 1,
            "from": _sender(ANN),
            "chat": {"id": GROUP, "type": "group", "title": "Friends"},
            "date": 0,
            "text": "hi",
        },
    }
    assert update_parse(bot_id=1, update=update).chat_type == "group"
    del update["message"]["chat"]["title"]
    update["message"]["chat"] = {"id": ANN, "type": "private"}
    assert update_parse(bot_id=1, update=update).chat_type == "private"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_chat_types = st.sampled_from(["private", "group", "supergroup", "channel"]) | st.one_of(
    st.sampled_from(["group", "supergroup"]), st.text(max_size=12), _json
)


@st.composite
def _updates(draw) -> dict:
    """Updates as Telegram (or someone forging them) might send: a message or a button
    press, any chat type, parts missing or of the wrong type."""
    chat = {"id": draw(st.integers(-(2**52), 2**52)), "type": draw(_chat_types)}
    sender = {"id": draw(st.integers(1, 2**52)), "is_bot": False, "first_name": "x"}
    message = {"message_id": 1, "date": 0, "chat": chat, "text": draw(st.text(max_size=10))}
    if draw(st.booleans()):
        message["from"] = sender
        update = {"message": message}
    else:
        query = {"id": "q", "from": sender, "chat_instance": "c", "data": "w:1:1:0"}
        if draw(st.booleans()):
            query["message"] = message
        update = {"callback_query": query}
    if draw(st.booleans()):
        update[draw(st.sampled_from(["message", "callback_query"]))] = draw(_json)
    return {"update_id": 7, **update}


@settings(max_examples=150, deadline=None)
@given(_updates())
def test_the_batch_locks_exactly_the_session_the_engine_uses(update):
    """The batch computes session keys from the raw payload, the engine from the parsed
    update: for anything the parser accepts they agree, and the raw side never raises."""
    raw = session_key_for_chat(
        bot_id=1,
        chat_id=update_chat_id(update) or 0,
        chat_type=update_chat_type(update),
        telegram_id=update_sender_id(update),
    )
    try:
        parsed = update_parse(bot_id=1, update=update)
    except (MalformedUpdate, UnsupportedUpdate):
        return
    engine = session_key_for_chat(
        bot_id=1, chat_id=parsed.chat_id, chat_type=parsed.chat_type, telegram_id=parsed.telegram_id
    )
    assert raw == engine
