from __future__ import annotations

import pytest

from botplatform.conversation import InputEvent
from tests.factories import bot_create, bot_user_create
from workflows.models import Workflow
from workflows.publishing import workflow_publish
from workflows.services import event_process

DELIVERED: list[dict] = []


def record_delivery(*, bot_id, chat_id, actions) -> None:
    """Stands in for every delivery outside an update (``workflows.delivery``)."""
    DELIVERED.append({"bot_id": bot_id, "chat_id": chat_id, "actions": list(actions)})


@pytest.fixture
def delivered(delivery_to):
    delivery_to(record_delivery)
    DELIVERED.clear()
    yield DELIVERED
    DELIVERED.clear()


@pytest.fixture
def bot(project):
    return bot_create(project=project, username="demo_bot")


@pytest.fixture
def user(project):
    return bot_user_create(project=project, first_name="Ann")


_counter = iter(range(1, 10**9))


def publish(project, definition, *, triggers=None, slug=None, priority=0) -> Workflow:
    """Create a workflow with ``definition`` and publish it through the real service."""
    slug = slug or f"wf-{next(_counter)}"
    workflow = Workflow.objects.create(
        project=project,
        name=slug,
        slug=slug,
        draft=definition,
        triggers=triggers if triggers is not None else [{"type": "command", "command": "start"}],
        priority=priority,
    )
    workflow_publish(workflow=workflow)
    return workflow


def text(user, body, *, bot=None, event_id=""):
    return event_process(
        user=user, bot=bot, event=InputEvent(kind="text", text=body, event_id=event_id)
    )


def command(user, name, payload="", *, bot=None, event_id=""):
    return event_process(
        user=user,
        bot=bot,
        event=InputEvent(kind="command", command=name, payload=payload, event_id=event_id),
    )


def press(user, button, *, bot=None, message_id=1, query_id="q1", event_id=""):
    data = button if isinstance(button, str) else button.callback_data
    return event_process(
        user=user,
        bot=bot,
        event=InputEvent(
            kind="callback",
            callback_data=data,
            callback_query_id=query_id,
            message_id=message_id,
            event_id=event_id,
        ),
    )


def texts(result) -> list[str]:
    return [a.text for a in result.actions if hasattr(a, "chat_id")]


def buttons(result) -> dict:
    """label -> Button of the last message with buttons."""
    for action in reversed(result.actions):
        rows = getattr(action, "buttons", ())
        if rows:
            return {b.text: b for row in rows for b in row}
    return {}
