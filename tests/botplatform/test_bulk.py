"""rows_update_sql and rows_insert_sql: many rows, different values, one statement, on real
PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botplatform.bulk import any_of, rows_insert_sql, rows_update_sql

CASTS = {"id": "bigint", "order": "text", "data": "jsonb", "at": "timestamptz"}


@pytest.fixture
def table(db):
    with connection.cursor() as cursor:
        # "order" is a reserved word: the helper must quote its identifiers.
        cursor.execute(
            'CREATE TEMP TABLE bulk_demo (id bigint PRIMARY KEY, "order" text, data jsonb,'
            " at timestamptz)"
        )
        cursor.execute(
            "INSERT INTO bulk_demo VALUES (1, 'a', '{}', NULL), (2, 'b', '{}', NULL),"
            " (3, 'c', '{}', NULL)"
        )
    yield "bulk_demo"
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE bulk_demo")


def _rows() -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute('SELECT id, "order", data::text, at FROM bulk_demo ORDER BY id')
        return [
            (pk, order, None if data is None else json.loads(data), at)
            for pk, order, data, at in cursor.fetchall()
        ]


def test_each_row_gets_its_own_values_and_others_stay(table):
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    sql, params = rows_update_sql(
        table,
        key="id",
        columns=["order", "data", "at"],
        # A NULL in the first row: the casts, not the first row, give the types.
        rows=[(1, None, json.dumps({"n": 1}), None), (3, "z", json.dumps([1, "x"]), at)],
        casts=CASTS,
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        assert cursor.rowcount == 2
    assert _rows() == [(1, None, {"n": 1}, None), (2, "b", {}, None), (3, "z", [1, "x"], at)]


def test_a_subset_of_columns_leaves_the_rest(table):
    sql, params = rows_update_sql(
        table, key="id", columns=["order"], rows=[(2, "only")], casts=CASTS
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    assert _rows()[1] == (2, "only", {}, None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rows": []}, "at least one row"),
        ({"rows": [(1, "x")]}, "each row needs 3 values"),
        ({"casts": {"id": "bigint"}}, "no SQL type given for order"),
    ],
)
def test_bad_arguments_are_refused_before_any_sql(kwargs, message):
    arguments = {"key": "id", "columns": ["order"], "rows": [(1, "x")], "casts": CASTS}
    arguments.update(kwargs)
    if kwargs.get("rows") == [(1, "x")]:
        arguments["columns"] = ["order", "data"]
    with pytest.raises(ValueError, match=message):
        rows_update_sql("bulk_demo", **arguments)


# Text PostgreSQL can store: no NUL, no lone surrogates (not encodable as UTF-8).
text_without_nul = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=2000
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(values=st.lists(text_without_nul, min_size=3, max_size=3))
def test_any_text_arrives_unchanged(table, values):
    """Odd Unicode, quotes, SQL-looking text and long strings are values, never SQL."""
    rows = [(pk, value) for pk, value in zip([1, 2, 3], values, strict=True)]
    sql, params = rows_update_sql(table, key="id", columns=["order"], rows=rows, casts=CASTS)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    assert [row[1] for row in _rows()] == values


def test_one_statement_text_for_any_number_of_rows_and_one_parameter_for_the_rows(table):
    """The text never changes with the row count (psycopg converts it once and the
    server prepares it once), and the rows are one parameter."""
    one = rows_update_sql(table, key="id", columns=["order"], rows=[(1, "x")], casts=CASTS)
    three = rows_update_sql(
        table, key="id", columns=["order"], rows=[(1, "x"), (2, "y"), (3, None)], casts=CASTS
    )
    assert one[0] == three[0]
    assert len(three[1]) == 2 and three[1][1] == 3  # the rows (one JSON text), their count
    with connection.cursor() as cursor:
        cursor.execute(*three)
        assert cursor.rowcount == 3
    assert [row[1] for row in _rows()] == ["x", "y", None]


def test_an_insert_types_every_column(table):
    """A JSON null in a jsonb column is SQL NULL, as Django's JSONField stores None."""
    at = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    sql, params = rows_insert_sql(
        table,
        columns=["id", "order", "data", "at"],
        rows=[(7, 'q"uote\\', json.dumps({"deep": [1, {"x": None}]}), at), (8, None, "null", None)],
        casts=CASTS,
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    assert _rows()[3:] == [(7, 'q"uote\\', {"deep": [1, {"x": None}]}, at), (8, None, None, None)]


def _generic_plan(sql: str, params: list, types: str) -> str:
    """The plan a prepared statement settles on (plan_cache_mode=force_generic_plan,
    what the server uses once it has run the statement five times), as JSON text."""
    numbered = sql
    for n in range(1, len(params) + 1):
        numbered = numbered.replace("%s", f"${n}", 1)
    with connection.cursor() as cursor:
        # EXPLAIN takes no bound parameters: the values go in as quoted literals
        cursor.execute(
            "SELECT " + ", ".join("quote_literal(%s::text)" for _ in params),
            [str(value) for value in params],
        )
        literals = ", ".join(cursor.fetchone())
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        cursor.execute(f"PREPARE bulk_probe({types}) AS {numbered}")
        try:
            cursor.execute(f"EXPLAIN (FORMAT JSON) EXECUTE bulk_probe({literals})")
            return json.dumps(cursor.fetchone()[0])
        finally:
            cursor.execute("DEALLOCATE bulk_probe")
            cursor.execute("RESET plan_cache_mode")


def test_a_prepared_update_of_one_row_looks_it_up_by_index_not_by_a_table_scan(table):
    """A set-returning function counts as 100 rows to the planner: joined to a table of
    a few thousand rows (a cleaned journal), a prepared update of ONE row chose a hash
    join over a scan of the whole table. The row count as a LIMIT tells it otherwise;
    the same statement without it is the control."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO bulk_demo SELECT n, repeat('x', 200), '{}', NULL"
            " FROM generate_series(10, 5000) AS n"
        )
        cursor.execute("ANALYZE bulk_demo")
    sql, params = rows_update_sql(table, key="id", columns=["order"], rows=[(11, "y")], casts=CASTS)
    plan = _generic_plan(sql, params, "jsonb, bigint")
    assert '"Index Scan"' in plan and '"Seq Scan"' not in plan, plan
    unlimited = sql.replace(" LIMIT (SELECT %s::bigint)", "")
    assert unlimited != sql
    control = _generic_plan(unlimited, params[:1], "jsonb")
    assert '"Seq Scan"' in control, control
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        assert cursor.rowcount == 1


def test_a_prepared_update_keeps_one_plan_instead_of_planning_every_time(table):
    """After five runs the server keeps a generic plan for a prepared statement, unless
    the plans made for the actual values look cheaper: a row count it could read at
    planning time did that, and every run was planned again."""
    sql, params = rows_update_sql(table, key="id", columns=["order"], rows=[(1, "z")], casts=CASTS)
    numbered = sql.replace("%s", "$1", 1).replace("%s", "$2", 1)
    with connection.cursor() as cursor:
        cursor.execute("SELECT quote_literal(%s::text)", [params[0]])  # EXECUTE binds nothing
        (rows,) = cursor.fetchone()
        cursor.execute(f"PREPARE bulk_reuse(jsonb, bigint) AS {numbered}")
        try:
            for _ in range(8):
                cursor.execute(f"EXECUTE bulk_reuse({rows}, 1)")
            cursor.execute(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE name = 'bulk_reuse'"
            )
            generic, custom = cursor.fetchone()
        finally:
            cursor.execute("DEALLOCATE bulk_reuse")
    assert (generic, custom) == (3, 5)


def _plans_after_eight_runs(where: str) -> tuple[int, int, str]:
    """(generic plans, custom plans, the last plan) of ``SELECT … WHERE id = <where>``
    prepared and run eight times with a one-element array."""
    with connection.cursor() as cursor:
        cursor.execute(f"PREPARE any_probe(bigint[]) AS SELECT * FROM bulk_demo WHERE id = {where}")
        try:
            for _ in range(8):
                cursor.execute("EXECUTE any_probe('{11}')")
                assert cursor.fetchall()[0][0] == 11
            cursor.execute("EXPLAIN (FORMAT JSON) EXECUTE any_probe('{11}')")
            plan = json.dumps(cursor.fetchone()[0])
            cursor.execute(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE name = 'any_probe'"
            )
            generic, custom = cursor.fetchone()
        finally:
            cursor.execute("DEALLOCATE any_probe")
    return generic, custom, plan


def test_any_of_an_array_keeps_one_generic_plan_that_uses_the_index(table):
    """``col = ANY($1)`` is planned again for every run (the one-element plan looks
    cheaper than the generic one); ``any_of`` hides the length from every plan."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO bulk_demo SELECT n, repeat('x', 200), '{}', NULL"
            " FROM generate_series(10, 5000) AS n"
        )
        cursor.execute("ANALYZE bulk_demo")
    generic, custom, plan = _plans_after_eight_runs(any_of("bigint[]").replace("%s", "$1"))
    assert (generic, custom) == (4, 5), (generic, custom)  # eight runs and the EXPLAIN
    assert '"Index Scan"' in plan and '"Seq Scan"' not in plan, plan
    generic, custom, _plan = _plans_after_eight_runs("ANY($1)")  # the control
    assert generic == 0, (generic, custom)
