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
