"""Writes of a user's custom variables (``vars.*``): set, delete, increment.

Each write drops the user's cached state after commit (``user_state_changed``), like
every other write of the loyalty core.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from users.invalidation import user_state_changed
from users.models import BotUser, UserVariable
from users.selectors import COMPUTED_VARIABLES

VARIABLE_KEY_MAX_LENGTH = 64


def _variable_key_checked(key: object) -> str:
    if not isinstance(key, str) or not key.strip():
        raise ValueError("a variable name must be a non-empty string")
    if len(key) > VARIABLE_KEY_MAX_LENGTH:
        raise ValueError(f"variable name {key[:20]!r}... is longer than 64 characters")
    if key in COMPUTED_VARIABLES:
        raise ValueError(f"{key!r} is computed by the platform and cannot be set")
    return key


def _user_must_exist(user_id: int) -> None:
    # The foreign key is checked only at commit (deferred): ask first for a clear error.
    if not BotUser.objects.filter(pk=user_id).exists():
        raise BotUser.DoesNotExist(f"no bot user {user_id}")


def user_variable_set(*, user_id: int, project_id: int, key: str, value: Any) -> None:
    """Create or replace one custom variable (a JSON value).

    An existing variable costs one UPDATE; a new one is inserted in a savepoint, and a
    concurrent insert of the same name turns into an update instead of an error.
    """
    key = _variable_key_checked(key)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"variable {key!r} must hold a JSON value: {error}") from error
    with transaction.atomic():
        existing = UserVariable.objects.filter(user_id=user_id, key=key)
        if not existing.update(value=value, updated_at=timezone.now()):
            _user_must_exist(user_id)
            try:
                with transaction.atomic():
                    UserVariable.objects.create(user_id=user_id, key=key, value=value)
            except IntegrityError:
                existing.update(value=value, updated_at=timezone.now())
        user_state_changed(user_id=user_id, project_id=project_id)


def user_variable_delete(*, user_id: int, project_id: int, key: str) -> None:
    """Remove one custom variable (no error if it did not exist)."""
    key = _variable_key_checked(key)
    with transaction.atomic():
        UserVariable.objects.filter(user_id=user_id, key=key).delete()
        user_state_changed(user_id=user_id, project_id=project_id)


def user_variable_increment(
    *, user_id: int, project_id: int, key: str, by: int | float
) -> int | float:
    """Add ``by`` to a numeric variable (missing counts as 0) under its row lock.

    Concurrent increments never lose an update. Raises ValueError if the variable
    holds something that is not a number.
    """
    key = _variable_key_checked(key)
    if isinstance(by, bool) or not isinstance(by, int | float) or not math.isfinite(by):
        raise ValueError(f"can only increment by a finite number, got {by!r}")
    with transaction.atomic():
        rows = UserVariable.objects.select_for_update().filter(user_id=user_id, key=key)
        variable = rows.first()
        if variable is None:
            _user_must_exist(user_id)
            try:
                with transaction.atomic():
                    variable = UserVariable.objects.create(user_id=user_id, key=key, value=0)
            except IntegrityError:
                variable = rows.get()  # created concurrently: wait for its lock
        current = 0 if variable.value is None else variable.value
        if isinstance(current, bool) or not isinstance(current, int | float):
            raise ValueError(f"variable {key!r} holds {current!r}, not a number")
        value = current + by
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"variable {key!r} would overflow")
        UserVariable.objects.filter(pk=variable.pk).update(value=value, updated_at=timezone.now())
        user_state_changed(user_id=user_id, project_id=project_id)
    return value
