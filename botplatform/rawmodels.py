"""Model instances from one raw SQL statement, for the per-update hot path.

``Model.objects.raw()`` works out, on every call, which column feeds which field
and which converters apply (``RawQuerySet.resolve_model_init_order``, the
compiler's converters): for the one or two rows a lone update reads, that setup
cost more than building the rows and about a third of running the statement. The
mapping depends only on the model and the statement's columns, so it is worked out
once per (model, columns) and kept for the life of the process. Same semantics as
``raw()``: columns named like a field's column set that field, the others become
attributes (annotations), the primary key must be among them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.core.exceptions import FieldDoesNotExist
from django.db import connection
from django.db.models import Model

M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class _Plan:
    names: list[str]  # the attnames of the fields the statement returns, in model order
    positions: list[int]  # where each of those is in a row
    annotations: list[tuple[str, int]]  # the other columns: (attribute, position)
    converters: list[tuple[int, list[Callable], Any]]  # (position, converters, expression)


_plans: dict[tuple[type[Model], str, tuple[str, ...]], _Plan] = {}


def _plan(model: type[Model], columns: tuple[str, ...]) -> _Plan:
    key = (model, connection.alias, columns)
    plan = _plans.get(key)
    if plan is None:
        plan = _plans[key] = _plan_build(model, columns)
    return plan


def _plan_build(model: type[Model], columns: tuple[str, ...]) -> _Plan:
    by_column = {field.column: field for field in model._meta.concrete_fields}
    fields = [field for field in model._meta.concrete_fields if field.column in columns]
    if model._meta.pk not in fields:
        raise FieldDoesNotExist("Raw query must include the primary key")
    converters = []
    for position, column in enumerate(columns):
        field = by_column.get(column)
        if field is None:
            continue
        expression = field.get_col(model._meta.db_table)
        found = connection.ops.get_db_converters(expression) + expression.get_db_converters(
            connection
        )
        if found:
            converters.append((position, found, expression))
    return _Plan(
        names=[field.attname for field in fields],
        positions=[columns.index(field.column) for field in fields],
        annotations=[(c, i) for i, c in enumerate(columns) if c not in by_column],
        converters=converters,
    )


def models_from_sql(model: type[M], sql: str, params: Sequence[Any]) -> list[M]:
    """Run ``sql`` and build a ``model`` instance from each row (see the module docstring)."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        columns = tuple(column.name for column in cursor.description)
        rows = cursor.fetchall()
    if not rows:
        return []
    plan = _plan(model, columns)
    db = connection.alias
    result = []
    for row in rows:
        if plan.converters:
            row = list(row)
            for position, converters, expression in plan.converters:
                value = row[position]
                for converter in converters:
                    value = converter(value, expression, connection)
                row[position] = value
        instance = model.from_db(db, plan.names, [row[i] for i in plan.positions])
        for attribute, position in plan.annotations:
            setattr(instance, attribute, row[position])
        result.append(instance)
    return result
