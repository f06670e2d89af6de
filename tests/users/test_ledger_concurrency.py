"""The ledger under real concurrency: threads and separate processes, one user.

Whatever the interleaving: balance = start - successes * amount, never negative,
the ledger sums to the balance, and each idempotency key is applied once.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext

from botplatform import locks, metrics
from tests.factories import bot_user_create, project_create
from tests.users.helpers import other_connection, run_in_threads
from users import ledger
from users.ledger import bonus_earn, bonus_spend
from users.models import BonusTransaction, BotUser

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.django_db(transaction=True)


def _user_with(balance: int) -> BotUser:
    """A user with a seeded balance (1500 covers all 50 spends of 30: only locks refuse)."""
    user = bot_user_create(project=project_create())
    bonus_earn(user_id=user.pk, amount=balance, idempotency_key="seed")
    return user


def _assert_ledger_consistent(user_id: int, *, start: int, amount: int, successes: int) -> None:
    balance = BotUser.objects.values_list("balance", flat=True).get(pk=user_id)
    assert balance == start - successes * amount
    assert balance >= 0
    entries = list(BonusTransaction.objects.filter(user_id=user_id).order_by("id"))
    assert sum(e.amount for e in entries) == balance
    assert sum(1 for e in entries if e.kind == "spend") == successes
    running = 0
    for entry in entries:  # every entry's balance_after continues the previous one
        running += entry.amount
        assert entry.balance_after == running >= 0


def _redis_down(monkeypatch) -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    monkeypatch.setattr(locks, "_redis", lambda: dead)


def _no_locks(monkeypatch) -> None:
    """Neither Redis nor the advisory fallback, nor (PostgreSQL's one-statement spend)
    the spend lock: only the database guards remain."""
    _redis_down(monkeypatch)
    monkeypatch.setattr(locks, "_fallback_lock", lambda key: contextlib.nullcontext())
    monkeypatch.setattr(ledger, "_SPEND_SQL", ledger._spend_sql("true"))


def test_50_spends_from_threads_with_the_lock():
    user = _user_with(1500)
    results = run_in_threads(
        lambda i: bonus_spend(user_id=user.pk, amount=30, idempotency_key=f"t:{i}"), 50
    )
    statuses = Counter(getattr(r, "status", repr(r)) for r in results)
    assert set(statuses) <= {"ok", "in_progress"}, statuses
    assert statuses["ok"] >= 1
    _assert_ledger_consistent(user.pk, start=1500, amount=30, successes=statuses["ok"])


def test_50_spends_from_threads_with_redis_down_use_the_advisory_lock(monkeypatch):
    _redis_down(monkeypatch)
    user = _user_with(1500)
    results = run_in_threads(
        lambda i: bonus_spend(user_id=user.pk, amount=30, idempotency_key=f"t:{i}"), 50
    )
    statuses = Counter(getattr(r, "status", repr(r)) for r in results)
    assert set(statuses) <= {"ok", "in_progress"}, statuses
    assert statuses["ok"] >= 1
    _assert_ledger_consistent(user.pk, start=1500, amount=30, successes=statuses["ok"])


def test_50_spends_from_threads_without_any_lock_cannot_overdraw(monkeypatch):
    """No Redis lock, no fallback lock: row locks alone keep the balance exact."""
    _no_locks(monkeypatch)
    user = _user_with(100)
    results = run_in_threads(
        lambda i: bonus_spend(user_id=user.pk, amount=7, idempotency_key=f"t:{i}"), 50
    )
    statuses = Counter(getattr(r, "status", repr(r)) for r in results)
    assert statuses == {"ok": 14, "insufficient": 36}
    _assert_ledger_consistent(user.pk, start=100, amount=7, successes=14)


def test_concurrent_duplicates_of_one_key_are_applied_once(monkeypatch):
    _no_locks(monkeypatch)  # no lock: the duplicates really race in the database
    user = _user_with(100)
    spends = run_in_threads(
        lambda i: bonus_spend(user_id=user.pk, amount=10, idempotency_key="double-tap"), 20
    )
    earns = run_in_threads(
        lambda i: bonus_earn(user_id=user.pk, amount=5, idempotency_key="retried-task"), 20
    )
    for results in (spends, earns):
        assert all(getattr(r, "status", None) == "ok" for r in results), results
        assert len({r.transaction_id for r in results}) == 1
        assert sum(not r.replayed for r in results) == 1
    assert {r.balance for r in spends} == {90}
    assert {r.balance for r in earns} == {95}
    user.refresh_from_db()
    assert user.balance == 95
    assert BonusTransaction.objects.filter(user=user).count() == 3


def test_duplicate_key_racing_for_two_users_applies_to_one_only(monkeypatch):
    """Two users, one key: the unique constraint picks one; the other gets a clear error."""
    project = project_create()
    users = [bot_user_create(project=project) for _ in range(2)]
    results = run_in_threads(
        lambda i: bonus_earn(user_id=users[i % 2].pk, amount=5, idempotency_key="shared"), 10
    )
    entries = BonusTransaction.objects.filter(idempotency_key="shared")
    assert entries.count() == 1
    winner = entries.get().user_id
    for index, result in enumerate(results):
        if users[index % 2].pk == winner:
            assert result.status == "ok"
        else:
            assert isinstance(result, ValueError), result
    total = BotUser.objects.aggregate(s=Sum("balance"))["s"]
    assert total == 5


def test_mixed_earns_and_spends_keep_the_ledger_exact(monkeypatch):
    _no_locks(monkeypatch)
    user = _user_with(50)

    def work(i: int):
        if i % 2:
            return bonus_earn(user_id=user.pk, amount=3, idempotency_key=f"e:{i}")
        return bonus_spend(user_id=user.pk, amount=5, idempotency_key=f"s:{i}")

    results = run_in_threads(work, 40)
    assert all(getattr(r, "status", None) in {"ok", "insufficient"} for r in results), results
    spent = sum(1 for i, r in enumerate(results) if i % 2 == 0 and r.status == "ok")
    user.refresh_from_db()
    assert user.balance == 50 + 20 * 3 - spent * 5
    assert BonusTransaction.objects.filter(user=user).aggregate(s=Sum("amount"))["s"] == (
        user.balance
    )


def _run_spend_processes(
    user_id: int, *, amount: int, processes: int, each: int, tmp_path, no_locks: bool
) -> Counter:
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "botplatform.settings",
        "DATABASE_URL": (
            f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "REDIS_URL": settings.CACHES["default"]["LOCATION"],
        "CELERY_BROKER_URL": "",
        "SECRET_KEY": "test-secret-key-" + "x" * 50,
        "DEBUG": "false",
    }
    if db.get("PASSWORD"):
        env["DATABASE_URL"] = env["DATABASE_URL"].replace(
            f"{db['USER']}@", f"{db['USER']}:{db['PASSWORD']}@"
        )
    go_file = tmp_path / "go"
    command = [
        sys.executable,
        "-m",
        "tests.users.spend_worker",
        "--user",
        str(user_id),
        "--amount",
        str(amount),
        "--count",
        str(each),
        "--go-file",
        str(go_file),
    ]
    workers = [
        subprocess.Popen(
            [*command, "--key-prefix", f"p{n}", *(["--no-locks"] if no_locks else [])],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    time.sleep(0.5)  # let them import Django; they wait for the go-file anyway
    go_file.touch()
    statuses: Counter = Counter()
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        statuses.update(json.loads(out.strip().splitlines()[-1]))
    return statuses


@pytest.mark.slow
def test_50_spends_from_separate_processes_with_the_lock(tmp_path):
    user = _user_with(1500)
    statuses = _run_spend_processes(
        user.pk, amount=30, processes=10, each=5, tmp_path=tmp_path, no_locks=False
    )
    assert sum(statuses.values()) == 50
    assert set(statuses) <= {"ok", "in_progress"}, statuses
    assert statuses["ok"] >= 1
    _assert_ledger_consistent(user.pk, start=1500, amount=30, successes=statuses["ok"])


@pytest.mark.slow
def test_50_spends_from_separate_processes_without_any_lock(tmp_path):
    """Redis gone and no fallback lock: the database alone still cannot overdraw."""
    user = _user_with(100)
    statuses = _run_spend_processes(
        user.pk, amount=7, processes=10, each=5, tmp_path=tmp_path, no_locks=True
    )
    assert statuses == {"ok": 14, "insufficient": 36}
    _assert_ledger_consistent(user.pk, start=100, amount=7, successes=14)


# --- PostgreSQL's one-statement spend: its lock, its snapshot, its ON CONFLICT -----------


def test_50_spends_from_threads_with_the_lock_never_overdraw():
    """The balance runs out under contention: every answer is ok, insufficient or
    in_progress, at most 14 spends of 7 fit in 100, and the ledger stays exact."""
    user = _user_with(100)
    results = run_in_threads(
        lambda i: bonus_spend(user_id=user.pk, amount=7, idempotency_key=f"t:{i}"), 50
    )
    statuses = Counter(getattr(r, "status", repr(r)) for r in results)
    assert set(statuses) <= {"ok", "insufficient", "in_progress"}, statuses
    assert 1 <= statuses["ok"] <= 14
    _assert_ledger_consistent(user.pk, start=100, amount=7, successes=statuses["ok"])


def test_concurrent_duplicates_with_the_lock_are_applied_once():
    user = _user_with(100)
    results = run_in_threads(
        lambda i: bonus_spend(user_id=user.pk, amount=10, idempotency_key="double-tap"), 20
    )
    statuses = Counter(getattr(r, "status", repr(r)) for r in results)
    assert set(statuses) <= {"ok", "in_progress"}, statuses
    applied = [r for r in results if r.status == "ok"]
    assert sum(not r.replayed for r in applied) == 1
    assert {(r.transaction_id, r.balance) for r in applied} == {(applied[0].transaction_id, 90)}
    _assert_ledger_consistent(user.pk, start=100, amount=10, successes=1)


def _waiting_for_a_lock(marker: str, *, timeout: float = 10) -> None:
    """Until a backend running a statement that contains ``marker`` waits for a lock."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND query LIKE %s",
                [f"%{marker}%"],
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.01)
    raise AssertionError(f"no statement with {marker!r} ever waited for a lock")


@pytest.mark.parametrize("amount", [10, 11])
def test_a_duplicate_committed_after_the_snapshot_is_caught_by_on_conflict(amount):
    """Another transaction writes the same key (without the spend lock) and commits
    while the spend waits for the user's row: the spend's snapshot missed it, the
    insert's ON CONFLICT catches it, and a second statement reads it to answer."""
    user = _user_with(100)
    other = other_connection()
    try:
        other.execute("BEGIN")
        other.execute("SELECT id FROM users_botuser WHERE id = %s FOR UPDATE", [user.pk])
        entry_id = other.execute(
            "INSERT INTO users_bonustransaction (project_id, user_id, amount, kind, reason,"
            " idempotency_key, balance_after, created_at)"
            " VALUES (%s, %s, -10, 'spend', '', 'dup', 90, now()) RETURNING id",
            [user.project_id, user.pk],
        ).fetchone()[0]
        other.execute("UPDATE users_botuser SET balance = 90 WHERE id = %s", [user.pk])

        outcome: list = []

        def spend() -> None:
            try:
                with CaptureQueriesContext(connection) as queries:
                    try:
                        result = bonus_spend(user_id=user.pk, amount=amount, idempotency_key="dup")
                    except ledger.IdempotencyKeyConflict as error:  # the other amount
                        result = error
                outcome.append((result, len(queries)))
            finally:
                connection.close()

        thread = threading.Thread(target=spend)
        thread.start()
        _waiting_for_a_lock("lock_try")
        other.execute("COMMIT")
        thread.join(30)
    finally:
        other.close()
    ((result, statements),) = outcome
    if amount == 10:
        assert result == ledger.BonusResult(
            status="ok", balance=90, transaction_id=entry_id, replayed=True
        )
    else:
        assert isinstance(result, ledger.IdempotencyKeyConflict), result
    assert statements == 2  # the spend, then the re-read of the conflicting entry
    assert BotUser.objects.filter(pk=user.pk, balance=90).exists()
    _assert_ledger_consistent(user.pk, start=100, amount=10, successes=1)


def test_a_spend_while_the_first_spends_transaction_is_open_is_in_progress():
    """The spend lock lasts until the first spend's transaction ends: a second spend
    answers in_progress at once (a re-delivery of the open spend too: its entry is not
    committed yet), then goes through after the commit. A rollback frees it as well."""
    user = _user_with(100)
    started, finish = threading.Event(), threading.Event()
    first: list = []

    def open_spend(key: str, *, commit: bool) -> None:
        try:
            with transaction.atomic():
                first.append(bonus_spend(user_id=user.pk, amount=10, idempotency_key=key))
                started.set()
                finish.wait(30)
                if not commit:
                    raise RuntimeError("rolled back")
        except RuntimeError:
            pass
        finally:
            connection.close()

    thread = threading.Thread(target=open_spend, args=("first",), kwargs={"commit": True})
    thread.start()
    assert started.wait(30)
    sample = 'bp_lock_contention_total{lock="user_spend"}'
    before = metrics.totals().get(sample, 0)
    began = time.monotonic()
    busy = bonus_spend(user_id=user.pk, amount=10, idempotency_key="second")
    again = bonus_spend(user_id=user.pk, amount=10, idempotency_key="first")
    assert time.monotonic() - began < 5  # answered, not waited
    finish.set()
    thread.join(30)
    assert busy == ledger.BonusResult(status="in_progress", balance=100, transaction_id=None)
    assert again == busy
    assert metrics.totals()[sample] == before + 2
    assert first[0].status == "ok" and first[0].balance == 90
    replay = bonus_spend(user_id=user.pk, amount=10, idempotency_key="first")
    assert replay.replayed and replay.transaction_id == first[0].transaction_id
    assert bonus_spend(user_id=user.pk, amount=10, idempotency_key="second").balance == 80

    started.clear()
    finish.clear()
    thread = threading.Thread(target=open_spend, args=("third",), kwargs={"commit": False})
    thread.start()
    assert started.wait(30)
    assert bonus_spend(user_id=user.pk, amount=5, idempotency_key="fourth").status == (
        "in_progress"
    )
    finish.set()
    thread.join(30)
    assert bonus_spend(user_id=user.pk, amount=5, idempotency_key="fourth").balance == 75
    assert BotUser.objects.get(pk=user.pk).balance == 75
    assert not BonusTransaction.objects.filter(idempotency_key="third").exists()
