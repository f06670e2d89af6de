"""models_from_sql builds the instances Model.objects.raw() builds, its setup kept."""

from __future__ import annotations

import pytest
from django.core.exceptions import FieldDoesNotExist
from django.db import connection
from django.forms.models import model_to_dict

from botplatform import rawmodels
from botplatform.models import Bot, TelegramUpdate
from botplatform.rawmodels import models_from_sql
from tests.factories import bot_create

pytestmark = pytest.mark.django_db

TABLE = TelegramUpdate._meta.db_table


def _rows(bot) -> list[TelegramUpdate]:
    return [
        TelegramUpdate.objects.create(
            bot=bot,
            update_id=update_id,
            chat_id=5,
            payload={"update_id": update_id, "message": {"text": "héllo\u2028", "n": [1, 2.5]}},
            actions=[{"kind": "send", "text": "x"}],
        )
        for update_id in (11, 12)
    ]


def test_the_same_instances_as_raw_with_json_and_times_converted():
    bot = bot_create()
    _rows(bot)
    sql = f"SELECT *, update_id * 2 AS doubled FROM {TABLE} WHERE bot_id = %s ORDER BY id"
    ours = models_from_sql(TelegramUpdate, sql, [bot.pk])
    theirs = list(TelegramUpdate.objects.raw(sql, [bot.pk]))
    assert [model_to_dict(row) for row in ours] == [model_to_dict(row) for row in theirs]
    assert [row.doubled for row in ours] == [22, 24]  # a column that is no field
    assert ours[0].payload["message"]["n"] == [1, 2.5]  # JSON decoded, not text
    assert ours[0].received_at.tzinfo is not None
    assert ours[0]._state.adding is False and ours[0]._state.db == connection.alias
    ours[0].note = "saved back"
    ours[0].save(update_fields=["note"])  # a full model: it saves
    assert TelegramUpdate.objects.get(pk=ours[0].pk).note == "saved back"


def test_a_subset_of_columns_leaves_the_rest_deferred_and_the_mapping_is_kept():
    bot = bot_create()
    first, _ = _rows(bot)
    rawmodels._plans.clear()
    sql = f"SELECT id, status FROM {TABLE} WHERE id = %s"
    (row,) = models_from_sql(TelegramUpdate, sql, [first.pk])
    assert row.get_deferred_fields() >= {"payload", "update_id"}
    assert row.update_id == 11  # loaded on access, as with raw()
    models_from_sql(TelegramUpdate, sql, [first.pk])
    assert len(rawmodels._plans) == 1  # worked out once for these columns


def test_no_rows_and_a_missing_primary_key():
    bot = bot_create()
    sql = f"SELECT * FROM {TABLE} WHERE bot_id = %s"
    assert models_from_sql(TelegramUpdate, sql, [bot.pk]) == []
    with pytest.raises(FieldDoesNotExist):
        models_from_sql(Bot, f"SELECT username FROM {Bot._meta.db_table}", [])
