from __future__ import annotations

import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def _clean_cache():
    """Each test starts with an empty cache database (a dedicated Redis db number)."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def project(db):
    from tests.factories import project_create

    return project_create()


@pytest.fixture
def bot_user(project):
    from tests.factories import bot_user_create

    return bot_user_create(project=project)


# The Bot API double for every test that touches Telegram (the admin's getMe, loaddemo).
from tests.botplatform.telegram.conftest import double  # noqa: E402, F401


@pytest.fixture
def delivery_to():
    """Register where actions made outside an update go (``workflows.delivery``) for
    this test: ``delivery_to(fn)``; the start-up registration is restored after."""
    from workflows.delivery import delivery_register

    previous: list = []

    def register(deliver) -> None:
        registered = delivery_register(deliver)
        if not previous:
            previous.append(registered)

    yield register
    if previous:
        delivery_register(previous[0])
