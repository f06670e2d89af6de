"""``workflows.services.conversation_session``: the one sequence of every entry point
(lock → state → waiting → body → level-ups → flush → deliver), and the explicit batch."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from botplatform.conversation import InputEvent, SendMessage
from users.models import BotUser
from workflows.engine.batch import Batch
from workflows.services import conversation_session

pytestmark = pytest.mark.django_db

TIMER = InputEvent(kind="timer", event_id="t")


def test_an_error_in_the_body_rolls_everything_back_and_delivers_nothing(user, delivered):
    with (
        pytest.raises(RuntimeError),
        conversation_session(
            session_key="sim:1", user=user, event=TIMER, deliver=True
        ) as conversation,
    ):
        BotUser.objects.filter(pk=user.pk).update(first_name="Zed")
        conversation.state.actions.append(SendMessage(chat_id=user.chat_id, text="lost"))
        raise RuntimeError("the engine failed")
    assert BotUser.objects.get(pk=user.pk).first_name == "Ann"
    assert delivered == []


def test_the_actions_go_out_after_the_transaction_not_inside_it(user, delivered):
    reply = SendMessage(chat_id=user.chat_id, text="hi")
    with conversation_session(
        session_key="sim:2", user=user, event=TIMER, deliver=True
    ) as conversation:
        assert conversation.state.waiting_id is None
        conversation.state.actions.append(reply)
        assert connection.in_atomic_block and delivered == []
    assert delivered == [{"bot_id": None, "chat_id": user.chat_id, "actions": [reply]}]


def test_by_execution_id_a_missing_execution_ends_quietly(delivered):
    with conversation_session(execution_id=10**12, deliver=True) as conversation:
        assert conversation.execution is None
        assert conversation.state is None
    assert delivered == []


def test_a_batch_it_is_given_serves_the_lock_and_the_wait(user):
    """Handed explicitly (no thread-local): a session the batch locked and read ahead
    costs no statement; without the batch it locks and reads for itself."""
    batch = Batch()
    batch.locked_sessions.add("sim:3")
    batch.waiting["sim:3"] = None
    with (
        CaptureQueriesContext(connection) as queries,
        conversation_session(session_key="sim:3", user=user, event=TIMER, batch=batch) as c,
    ):
        assert c.state.batch is batch and c.waiting is None
    assert len(queries) == 0
    assert batch.waiting == {}  # served once
    with (
        CaptureQueriesContext(connection) as queries,
        conversation_session(session_key="sim:4", user=user, event=TIMER) as c,
    ):
        assert c.state.batch is None
    sql = " ".join(query["sql"] for query in queries.captured_queries)
    assert "pg_advisory_xact_lock" in sql and "SAVEPOINT" in sql
