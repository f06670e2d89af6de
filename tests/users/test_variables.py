"""Custom user variables: set, delete, atomic increment, validation."""

from __future__ import annotations

import pytest

from tests.factories import bot_user_create, project_create
from tests.users.helpers import run_in_threads
from users.models import BotUser, UserVariable
from users.variables import user_variable_delete, user_variable_increment, user_variable_set


def var(user: BotUser, key: str):
    return UserVariable.objects.get(user=user, key=key).value


def test_set_creates_then_replaces(bot_user):
    kwargs = {"user_id": bot_user.pk, "project_id": bot_user.project_id}
    user_variable_set(**kwargs, key="city", value="Riga")
    user_variable_set(**kwargs, key="city", value={"name": "Oslo", "zip": [1, 2]})
    user_variable_set(**kwargs, key="nothing", value=None)
    assert var(bot_user, "city") == {"name": "Oslo", "zip": [1, 2]}
    assert var(bot_user, "nothing") is None
    assert UserVariable.objects.filter(user=bot_user).count() == 2


@pytest.mark.parametrize("key", ["", "   ", "balance", "level", "referrals", "x" * 65, 5])
def test_bad_or_reserved_names_are_refused(bot_user, key):
    with pytest.raises(ValueError):
        user_variable_set(user_id=bot_user.pk, project_id=bot_user.project_id, key=key, value=1)
    assert not UserVariable.objects.exists()


@pytest.mark.parametrize("value", [object(), {1, 2}, float("nan"), b"bytes"])
def test_non_json_values_are_refused(bot_user, value):
    with pytest.raises(ValueError, match="JSON"):
        user_variable_set(user_id=bot_user.pk, project_id=bot_user.project_id, key="k", value=value)


def test_unknown_user_is_a_clear_error(db):
    project = project_create()
    with pytest.raises(BotUser.DoesNotExist):
        user_variable_set(user_id=987654, project_id=project.pk, key="k", value=1)
    with pytest.raises(BotUser.DoesNotExist):
        user_variable_increment(user_id=987654, project_id=project.pk, key="k", by=1)


def test_delete(bot_user):
    kwargs = {"user_id": bot_user.pk, "project_id": bot_user.project_id}
    user_variable_set(**kwargs, key="city", value="Riga")
    user_variable_delete(**kwargs, key="city")
    user_variable_delete(**kwargs, key="city")  # already gone: fine
    assert not UserVariable.objects.exists()


def test_increment_starts_from_zero_and_keeps_types(bot_user):
    kwargs = {"user_id": bot_user.pk, "project_id": bot_user.project_id}
    assert user_variable_increment(**kwargs, key="visits", by=1) == 1
    assert user_variable_increment(**kwargs, key="visits", by=2) == 3
    assert isinstance(var(bot_user, "visits"), int)
    assert user_variable_increment(**kwargs, key="visits", by=0.5) == 3.5
    user_variable_set(**kwargs, key="empty", value=None)
    assert user_variable_increment(**kwargs, key="empty", by=-4) == -4


def test_increment_of_a_non_number_is_refused_and_changes_nothing(bot_user):
    kwargs = {"user_id": bot_user.pk, "project_id": bot_user.project_id}
    user_variable_set(**kwargs, key="city", value="Riga")
    with pytest.raises(ValueError, match="not a number"):
        user_variable_increment(**kwargs, key="city", by=1)
    for by in (True, "1", float("inf"), None):
        with pytest.raises(ValueError, match="finite number"):
            user_variable_increment(**kwargs, key="n", by=by)
    assert var(bot_user, "city") == "Riga"
    assert not UserVariable.objects.filter(key="n").exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_increments_never_lose_an_update():
    user = bot_user_create()
    results = run_in_threads(
        lambda i: user_variable_increment(
            user_id=user.pk, project_id=user.project_id, key="clicks", by=1
        ),
        30,
    )
    assert sorted(results) == list(range(1, 31)), results
    assert var(user, "clicks") == 30
