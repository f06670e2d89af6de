"""Broadcasts and the simulator against the real Telegram sender and its HTTP double."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "botplatform.telegram.sender", reason="the Telegram runtime (issue 4) is not merged yet"
)

from devtools.telegram_double import TelegramDouble
from tests.factories import bot_create, bot_user_create
from tests.workflows.conftest import publish
from workflows import broadcasts
from workflows.models import Broadcast, SimulatorMessage, WorkflowExecution
from workflows.services import execution_timer_fire
from workflows.simulator import simulator_send, simulator_user_get

pytestmark = pytest.mark.django_db


@pytest.fixture
def double(settings):
    server = TelegramDouble().start()
    settings.TELEGRAM_API_URL = server.url
    settings.TELEGRAM_CHAT_SEND_WINDOW_MS = 300
    yield server
    server.stop()


def test_a_broadcast_through_telegram_counts_sent_and_blocked(project, double):
    bot = bot_create(project=project)
    double.bot_add(bot.token, bot.username)
    ann = bot_user_create(project=project, first_name="Ann")
    bob = bot_user_create(project=project, first_name="Bob")
    bot_user_create(project=project, first_name="Cid", is_blocked=True)
    double.block(bob.chat_id)
    broadcast = Broadcast.objects.create(
        project=project,
        title="News",
        text="Hello {{ user.first_name }}!",
        buttons=[[{"text": "Shop", "url": "https://shop.example"}]],
        segment="all",
    )
    broadcasts.broadcast_start(broadcast_id=broadcast.pk)
    broadcasts.broadcast_send_batch(broadcast_id=broadcast.pk, limit=10)
    broadcast.refresh_from_db()
    assert (broadcast.status, broadcast.sent, broadcast.blocked, broadcast.failed) == (
        "done",
        1,
        2,
        0,
    )
    assert double.sent_texts(bot.token, ann.chat_id) == ["Hello Ann!"]
    bob.refresh_from_db()
    assert bob.is_blocked  # Telegram's 403 marked him


def test_the_simulator_never_reaches_telegram_even_after_a_delay(
    project, double, django_user_model
):
    bot = bot_create(project=project)
    double.bot_add(bot.token, bot.username)
    publish(
        project,
        {
            "start": "a",
            "steps": {
                "a": {"type": "message", "text": "Wait for it", "next": "d"},
                "d": {"type": "delay", "seconds": 5, "next": "b"},
                "b": {"type": "message", "text": "Done waiting"},
            },
        },
    )
    operator = django_user_model.objects.create_user("ann", is_staff=True)
    user = simulator_user_get(project_id=project.pk, operator=operator)
    simulator_send(user=user, text="/start")
    execution = WorkflowExecution.objects.get(user=user)
    assert execution_timer_fire(
        execution_id=execution.pk, seq=execution.context["pending"]["seq"], force=True
    )
    texts = list(
        SimulatorMessage.objects.filter(user=user, direction="bot").values_list("text", flat=True)
    )
    assert texts == ["Wait for it", "Done waiting"]
    assert double.calls_of("sendMessage") == []


def test_a_rejected_token_pauses_the_broadcast_without_losing_anyone(project, double):
    bot = bot_create(project=project)
    double.bot_add(bot.token, bot.username)
    users = [bot_user_create(project=project, first_name=f"U{n}") for n in range(3)]
    broadcast = Broadcast.objects.create(
        project=project, title="News", text="Hi {{ user.first_name }}", segment="all"
    )
    broadcasts.broadcast_start(broadcast_id=broadcast.pk)
    double.revoke(bot.token)
    assert broadcasts.broadcast_send_batch(broadcast_id=broadcast.pk, limit=10) == 0
    broadcast.refresh_from_db()
    assert (broadcast.status, broadcast.sent, broadcast.failed) == ("sending", 0, 0)
    assert set(broadcast.deliveries.values_list("status", flat=True)) == {"pending"}
    assert broadcasts.broadcast_send_batch(broadcast_id=broadcast.pk, limit=10) == 0  # waits
    # The operator pastes a new token: sending resumes and everyone gets it once.
    double.bots[bot.token].revoked = False
    bot.__class__.objects.filter(pk=bot.pk).update(status="ok")
    assert broadcasts.broadcast_send_batch(broadcast_id=broadcast.pk, limit=10) == 3
    broadcast.refresh_from_db()
    assert (broadcast.status, broadcast.sent) == ("done", 3)
    for user in users:
        assert double.sent_texts(bot.token, user.chat_id) == [f"Hi {user.first_name}"]
