"""Shared tools of the loyalty tests: concurrency runners and round-trip counters."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager

import redis.connection
from django.db import connection

from botplatform import metrics


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
