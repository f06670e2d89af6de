"""Shared tools of the loyalty tests: concurrency runners and round-trip counters."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import redis.connection
from django.db import connection

from botplatform import locks, metrics


def run_in_threads(target: Callable[[int], object], count: int) -> list[object]:
    """Run ``target(i)`` in ``count`` threads released together; results (or errors) in order.

    Each thread closes its own database connection, so the test database can be dropped.
    """
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = target(index)
        except Exception as error:
            results[index] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


class RoundTrips:
    """Counts Redis requests sent by the test's own thread (a pipeline is one request).

    Only that thread: a background thread left by an earlier test (a runner's
    watchdog, a metrics flush) must not make a round-trip bound flaky.
    """

    def __init__(self) -> None:
        self.count = 0


@contextmanager
def redis_round_trips(monkeypatch):
    counter = RoundTrips()
    original = redis.connection.AbstractConnection.send_packed_command
    owner = threading.get_ident()

    def counting(self, command, check_health=True):
        if threading.get_ident() == owner:
            counter.count += 1
        return original(self, command, check_health=check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    # The metrics' periodic flush (every METRICS_FLUSH_INTERVAL s, from whichever call
    # counts next) is not the operation's round trip: none inside the count.
    monkeypatch.setattr(metrics, "_next_flush", float("inf"))
    try:
        yield counter
    finally:
        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", original)


def other_connection(*, autocommit: bool = True) -> psycopg.Connection:
    """A second connection to the test database, outside Django (another process's)."""
    settings = connection.settings_dict
    return psycopg.connect(
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        password=settings.get("PASSWORD") or None,
        dbname=settings["NAME"],
        autocommit=autocommit,
    )


@contextmanager
def spend_lock_held_elsewhere(user_id: int) -> Iterator[None]:
    """Hold the user's spend lock in another transaction for the block, as a spend of
    that user in a still open transaction does (PostgreSQL; ``users.ledger``).

    The test's own transaction must not hold it already (a spend of that user in a
    test that runs inside one transaction does, until the test ends): then this
    raises instead of waiting forever.
    """
    other = other_connection()
    try:
        other.execute("BEGIN")
        key = locks.user_spend_lock_key(user_id)
        taken = other.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", key).fetchone()[0]
        assert taken, f"user {user_id}'s spend lock is held already (by the test itself?)"
        yield
    finally:
        other.close()  # ends the transaction, and with it the lock
