"""manage.py ensuredb: a missing PostgreSQL database is created, or one line says how."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

from botplatform.dbcreate import DatabaseMissing, database_ensure

ROOT = Path(__file__).resolve().parents[2]


def _server() -> dict:
    db = settings.DATABASES["default"]
    return {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": db["HOST"] or "127.0.0.1",
        "PORT": db["PORT"] or 5432,
        "USER": db["USER"],
        "PASSWORD": db.get("PASSWORD", ""),
    }


def _ensuredb(url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(DATABASE_URL=url, DEBUG="true")
    return subprocess.run(
        [sys.executable, "manage.py", "ensuredb"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_missing_database_is_created_once(db):
    name = f"bp_ensure_{uuid.uuid4().hex[:8]}"
    server = _server()
    url = f"postgres://{server['USER']}@{server['HOST']}:{server['PORT']}/{name}"
    try:
        first = _ensuredb(url)
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == f"Created the database {name}."
        again = _ensuredb(url)
        assert again.returncode == 0 and again.stdout.strip() == ""
        assert database_ensure({**server, "NAME": name}) is False
    finally:
        with psycopg.connect(
            dbname="postgres",
            host=server["HOST"],
            port=server["PORT"],
            user=server["USER"],
            autocommit=True,
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_an_unreachable_server_is_one_line_not_a_traceback():
    result = _ensuredb("postgres://postgres@127.0.0.1:1/nothing_here")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Cannot reach PostgreSQL" in lines[0]
    assert "check DATABASE_URL" in lines[0] and "Traceback" not in result.stderr


def test_no_right_to_create_says_how_in_one_line(db):
    role = f"bp_nocreate_{uuid.uuid4().hex[:6]}"
    server = _server()
    with psycopg.connect(
        dbname="postgres",
        host=server["HOST"],
        port=server["PORT"],
        user=server["USER"],
        autocommit=True,
    ) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN NOCREATEDB")
    try:
        with pytest.raises(DatabaseMissing) as caught:
            database_ensure({**server, "USER": role, "NAME": f"{role}_db"})
        message = str(caught.value)
        assert "\n" not in message
        assert f"create it with: createdb -h {server['HOST']}" in message
        assert f"-U {role} {role}_db" in message
    finally:
        with psycopg.connect(
            dbname="postgres",
            host=server["HOST"],
            port=server["PORT"],
            user=server["USER"],
            autocommit=True,
        ) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_sqlite_needs_nothing():
    assert database_ensure({"ENGINE": "django.db.backends.sqlite3", "NAME": "x"}) is False
