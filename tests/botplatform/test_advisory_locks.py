"""The named advisory locks: one module holds every key family, and they never collide."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
from django.db import connection, transaction

from botplatform import locks
from workflows.engine.batch import Batch, session_lock_once

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ["botplatform", "workflows", "users"]


def _other_connection() -> psycopg.Connection:
    settings = connection.settings_dict
    return psycopg.connect(
        host=settings["HOST"],
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        dbname=settings["NAME"],
        autocommit=True,
    )


def test_the_key_families_have_distinct_numbers():
    numbers = [locks.SESSION_LOCK_SEED, locks.JOURNAL_CLAIM_NAMESPACE, locks.USER_SPEND_NAMESPACE]
    assert len(set(numbers)) == len(numbers)


def test_no_module_but_locks_names_an_advisory_lock_number():
    """An advisory-lock call with a number in it belongs in botplatform/locks.py."""
    literal = re.compile(r"pg_(try_)?advisory\w*\([^)]*\b\d{3,}\b|hashtextextended\([^)]*\d")
    offenders = [
        str(path.relative_to(ROOT))
        for package in RUNTIME
        for path in (ROOT / package).rglob("*.py")
        if path.name != "locks.py" and literal.search(path.read_text())
    ]
    offenders += [
        str(path.relative_to(ROOT))
        for package in RUNTIME
        for path in (ROOT / package).rglob("*.py")
        if path.name != "locks.py" and re.search(r"\b(7411|7467|7489)\b", path.read_text())
    ]
    assert offenders == []


@pytest.mark.django_db(transaction=True)
def test_a_session_lock_waits_for_its_holder_and_only_for_it():
    other = _other_connection()
    try:
        sql, params = locks.sessions_lock_sql(["bot:1:chat:5"])
        other.execute("BEGIN")
        other.execute(sql, params)
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '300ms'")
            locks.session_lock("bot:1:chat:6")  # another session: free
        with pytest.raises(Exception, match="lock timeout"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '300ms'")
            locks.session_lock("bot:1:chat:5")  # held by the other connection
        other.execute("COMMIT")
        with transaction.atomic():
            locks.session_lock("bot:1:chat:5")
    finally:
        other.close()


@pytest.mark.django_db(transaction=True)
def test_a_batch_does_not_take_a_session_lock_twice(django_assert_num_queries):
    batch = Batch()
    with transaction.atomic():
        sql, params = locks.sessions_lock_sql(["s1", "s2", "s1"])
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            assert cursor.fetchone()[0] == 2  # sorted, distinct
        batch.locked_sessions.update(["s1", "s2"])
        with django_assert_num_queries(0):
            session_lock_once(batch, "s1")
        with django_assert_num_queries(1):
            session_lock_once(batch, "s3")  # not the batch's: taken now
        with django_assert_num_queries(1):
            session_lock_once(None, "s1")  # no batch: always taken


@pytest.mark.django_db(transaction=True)
def test_a_journal_claim_and_a_session_lock_never_block_each_other():
    """Same number, different families: the claim of row k and any session lock whose
    hash might equal k live in different key spaces."""
    other = _other_connection()
    try:
        key = 12345
        other.execute("SELECT pg_advisory_lock(%s, %s)", [locks.JOURNAL_CLAIM_NAMESPACE, key])
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '300ms'")
                # The session lock's key is a single bigint; the claim is (namespace, key).
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
            locks.session_lock(str(key))
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", [locks.JOURNAL_CLAIM_NAMESPACE, key]
            )
            assert cursor.fetchone()[0] is False  # the claim itself is exclusive
    finally:
        other.close()
