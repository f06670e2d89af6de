"""Many rows, different values, one statement whose text never changes.

The batch paths put their writes off to the end of a batch and send them as one
statement; these build its parts. The rows travel as ONE parameter, a JSON array of
objects that PostgreSQL reads back as typed rows (``jsonb_to_recordset(%s::jsonb) AS
v("id" bigint, "context" jsonb, …)``), not as a placeholder per row and column:

- the statement's text is the same for a wave of one and of a hundred, so psycopg
  converts it once and the server prepares it once (psycopg re-parses every
  statement over 50 placeholders or 4 KB: at burst that was a tenth of the runner's
  CPU);
- the values are written as JSON by ``json`` (C), and spliced as they are where they
  are JSON already, instead of each being adapted by the driver (arrays, the other
  one-parameter form, cost three times the placeholders in text format: psycopg
  escapes every element in Python).

Every column carries its SQL type in the record definition, so PostgreSQL never
guesses a type from a value (a NULL, or JSON text, would otherwise be ``text``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime

from django.db import connection

_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def _value_json(value: object) -> str:
    if isinstance(value, datetime | date):
        return '"' + value.isoformat() + '"'
    return _dumps(value)


def rows_source(
    names: Sequence[str], rows: Sequence[Sequence[object]], casts: Mapping[str, str]
) -> tuple[str, list]:
    """(``(SELECT * FROM jsonb_to_recordset(%s::jsonb) AS r(...) LIMIT …) AS v``, its
    parameters: the rows and their count) for ``rows``: a FROM item with a column per
    name, typed by ``casts``. Values of ``jsonb``
    columns are given as JSON text (spliced as they are; ``null`` is SQL NULL, as
    Django's JSONField stores None); the others as plain values (str, numbers,
    bools, dates and datetimes)."""
    if not rows:
        raise ValueError("a bulk statement needs at least one row")
    missing = [name for name in names if name not in casts]
    if missing:
        raise ValueError(f"no SQL type given for {', '.join(missing)}")
    width = len(names)
    keys = [_dumps(name) + ":" for name in names]
    spliced = [casts[name] == "jsonb" for name in names]
    objects = []
    for row in rows:
        if len(row) != width:
            raise ValueError(f"each row needs {width} values ({', '.join(names)}), got {len(row)}")
        fields = [
            key + ("null" if value is None else value if raw else _value_json(value))
            for key, value, raw in zip(keys, row, spliced, strict=True)
        ]
        objects.append("{" + ",".join(fields) + "}")
    quote = connection.ops.quote_name
    record = ", ".join(f"{quote(name)} {casts[name]}" for name in names)
    # The LIMIT (the row count: it cuts nothing) is for the planner, which otherwise
    # takes any set-returning function for 100 rows: joined to a table of a few
    # thousand rows (a cleaned journal), that made a hash join over a scan of the
    # whole table, 1,170 pages for a wave of one. A LIMIT it cannot read at planning
    # time counts as a tenth of that, so the join looks rows up by index. In a
    # sub-select, because a plain parameter is read: every plan would then be made
    # for its own row count (0.3 ms of the server's CPU each time) instead of one
    # plan kept for the prepared statement.
    source = (
        f"(SELECT * FROM jsonb_to_recordset(%s::jsonb) AS r({record})"  # noqa: S608
        " LIMIT (SELECT %s::bigint)) AS v"
    )
    return source, ["[" + ",".join(objects) + "]", len(rows)]


def hidden(sql_type: str) -> str:
    """One parameter of ``sql_type`` that no plan can read: ``(SELECT %s::T)``, for a
    hot prepared statement.

    The server plans a prepared statement's first five runs for their values, then
    keeps one generic plan unless the plans made for the values look cheaper. A value
    the planner can read makes them look cheaper: an array's length (plans for one
    element beat the generic plan, priced for ten), or a constant that proves a
    partial index's condition (``status = 'handled'`` lets a plan scan the journal's
    open rows' index, whose statistics do not count the dead entries it walks). The
    statement is then planned on every run, 0.15-0.3 ms of the server's CPU each. A
    sub-select's value is unknown to every plan alike, and the generic plan is kept."""
    return f"(SELECT %s::{sql_type})"


def any_of(sql_type: str) -> str:
    """``ANY(…)`` of one :func:`hidden` array parameter of ``sql_type``
    (``"bigint[]"``); the generic plan is an index scan with ``= ANY``. The outer cast
    keeps ``ANY`` from reading the sub-select as a set of rows."""
    return f"ANY({hidden(sql_type)}::{sql_type})"


def rows_update_sql(
    table: str,
    *,
    key: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    casts: Mapping[str, str],
) -> tuple[str, list]:
    """(sql, params) setting ``columns`` of each row of ``table`` whose ``key`` matches.

    ``rows``: one tuple per row, the key first, then the values in ``columns`` order
    (JSON columns as JSON text). ``casts``: the SQL type of the key and of every column
    (``{"id": "bigint", "context": "jsonb", …}``).
    """
    source, params = rows_source([key, *columns], rows, casts)
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(name)} = v.{quote(name)}" for name in columns)
    sql = (
        f"UPDATE {quote(table)} AS t SET {assignments}"  # noqa: S608 (identifiers quoted, values as a parameter)
        f" FROM {source} WHERE t.{quote(key)} = v.{quote(key)}"
    )
    return sql, params


def rows_insert_sql(
    table: str,
    *,
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    casts: Mapping[str, str],
) -> tuple[str, list]:
    """(sql, params) inserting ``rows`` (values in ``columns`` order) into ``table``."""
    source, params = rows_source(columns, rows, casts)
    quote = connection.ops.quote_name
    names = ", ".join(quote(name) for name in columns)
    sql = f"INSERT INTO {quote(table)} ({names}) SELECT {names} FROM {source}"  # noqa: S608
    return sql, params
