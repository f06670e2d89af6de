"""One ``UPDATE … FROM (VALUES …)`` builder: many rows, different values, one statement.

The batch paths put their writes off to the end of a batch and send them as one
statement; this builds the UPDATE part. Every placeholder carries its SQL type, so
PostgreSQL never has to guess a column's type from the first row (a NULL there, or
JSON text, would otherwise be read as ``text``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from django.db import connection


def values_update_sql(
    table: str,
    *,
    key: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    casts: Mapping[str, str],
) -> tuple[str, list]:
    """(sql, params) setting ``columns`` of each row of ``table`` whose ``key`` matches.

    ``rows``: one tuple per row, the key first, then the values in ``columns`` order
    (already in the form the driver sends: JSON as text). ``casts``: the SQL type of
    the key and of every column (``{"id": "bigint", "context": "jsonb", …}``).
    """
    if not rows:
        raise ValueError("values_update_sql needs at least one row")
    names = [key, *columns]
    missing = [name for name in names if name not in casts]
    if missing:
        raise ValueError(f"no SQL type given for {', '.join(missing)}")
    width = len(names)
    placeholder = "(" + ", ".join(f"%s::{casts[name]}" for name in names) + ")"
    params: list = []
    for row in rows:
        if len(row) != width:
            raise ValueError(f"each row needs {width} values ({', '.join(names)}), got {len(row)}")
        params.extend(row)
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(name)} = v.{quote(name)}" for name in columns)
    sql = (
        f"UPDATE {quote(table)} AS t SET {assignments}"  # noqa: S608 (identifiers quoted, values as placeholders)
        f" FROM (VALUES {', '.join([placeholder] * len(rows))})"
        f" AS v({', '.join(quote(name) for name in names)})"
        f" WHERE t.{quote(key)} = v.{quote(key)}"
    )
    return sql, params
