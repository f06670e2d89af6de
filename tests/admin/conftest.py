from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User

from tests.factories import project_create

RECORDED: list[dict] = []


def record_telegram(*, bot_id, chat_id, actions) -> None:
    """Stands in for the Telegram sender behind the simulator's delivery router."""
    RECORDED.append({"bot_id": bot_id, "chat_id": chat_id, "actions": list(actions)})


@pytest.fixture
def telegram(settings):
    """Everything that would reach Telegram, recorded (the real router stays in place)."""
    settings.WORKFLOW_ACTION_DELIVERY = "workflows.simulator.actions_deliver"
    settings.WORKFLOW_ACTION_DELIVERY_TELEGRAM = "tests.admin.conftest.record_telegram"
    RECORDED.clear()
    yield RECORDED
    RECORDED.clear()


def operator_create(username: str, *projects) -> User:
    """A staff account with every model permission of our apps, member of ``projects``."""
    user = User.objects.create_user(username=username, password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label__in=["botplatform", "users", "workflows"])
    )
    for project in projects:
        project.operators.add(user)
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
