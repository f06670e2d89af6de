from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from botplatform.models import Membership
from tests.factories import project_create

RECORDED: list[dict] = []


def record_telegram(*, bot_id, chat_id, actions) -> None:
    """Stands in for the Telegram sender behind the simulator's delivery router."""
    RECORDED.append({"bot_id": bot_id, "chat_id": chat_id, "actions": list(actions)})


@pytest.fixture
def telegram(delivery_to):
    """Everything that would reach Telegram, recorded (the real router stays in place)."""
    from workflows.simulator import simulator_routed

    delivery_to(simulator_routed(record_telegram))
    RECORDED.clear()
    yield RECORDED
    RECORDED.clear()


def operator_create(username: str, *projects, role: str = "owner") -> User:
    """A staff account with ``role`` in ``projects`` and no Django permission at all:
    the role is all it takes."""
    user = User.objects.create_user(username=username, password="pw", is_staff=True)
    for project in projects:
        Membership.objects.create(project=project, user=user, role=role)
    return User.objects.get(pk=user.pk)


@pytest.fixture
def operator(project):
    return operator_create("ann", project)


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def other_project(db):
    return project_create(name="Other")


from tests.workflows.conftest import delivered  # noqa: E402, F401 - the engine's recorder
