"""What the peer benchmark reads off the machine: process CPU from ``/proc``, the
PostgreSQL database's counters, Redis's ``INFO``, and the statement counts the
contenders write (``counted.py``, ``refbot.py --count-file``)."""

from __future__ import annotations

import contextlib
import glob
import json
import os
from dataclasses import dataclass, field

TICK = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (gunicorn's workers, say)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for path in glob.glob(f"/proc/{current}/task/*/children"):
            with contextlib.suppress(OSError):
                todo += [int(x) for x in open(path).read().split()]
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), 0 once it is gone."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


@dataclass
class Snapshot:
    app: dict[int, float] = field(default_factory=dict)  # pid -> CPU s
    postgres: dict[int, float] = field(default_factory=dict)
    redis_cpu: float = 0.0
    redis_calls: dict[str, int] = field(default_factory=dict)
    statements: int = 0
    transaction_statements: int = 0
    texts: dict[str, int] = field(default_factory=dict)


class Meter:
    """Snapshots of everything the table needs; ``delta`` of two gives the costs."""

    def __init__(self, *, pg, redis, count_glob: str) -> None:
        self.pg = pg  # a psycopg connection to the benchmark's database (autocommit)
        self.redis = redis
        self.count_glob = count_glob
        self.app_pids: list[int] = []

    def pg_backends(self) -> list[int]:
        with self.pg.cursor() as cur:
            cur.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
            return [row[0] for row in cur.fetchall()]

    def pg_counters(self) -> dict[str, int]:
        """Transactions and tuple writes of the database (flushed by the backends
        within 10 s of going idle: read after a pause)."""
        with self.pg.cursor() as cur:
            cur.execute(
                "SELECT xact_commit + xact_rollback, tup_inserted + tup_updated + tup_deleted, "
                "tup_returned, tup_fetched FROM pg_stat_database WHERE datname = current_database()"
            )
            xacts, writes, _returned, fetched = cur.fetchone()
        return {"transactions": xacts, "tuple_writes": writes, "tuples_read": fetched}

    def counts(self) -> tuple[int, int, dict[str, int]]:
        statements = transactions = 0
        texts: dict[str, int] = {}
        for path in glob.glob(self.count_glob):
            if path.endswith(".tmp"):
                continue
            try:
                data = json.loads(open(path).read())
            except (OSError, ValueError):
                continue
            statements += data["statements"]
            transactions += data["transaction_statements"]
            for text, n in data.get("texts", {}).items():
                texts[text] = texts.get(text, 0) + n
        return statements, transactions, texts

    def snapshot(self) -> Snapshot:
        snap = Snapshot()
        for root in self.app_pids:
            for pid in process_tree(root):
                snap.app[pid] = cpu_seconds(pid)
        for pid in self.pg_backends():
            snap.postgres[pid] = cpu_seconds(pid)
        info = self.redis.info("cpu")
        snap.redis_cpu = info["used_cpu_sys"] + info["used_cpu_user"]
        stats = self.redis.info("commandstats")
        snap.redis_calls = {
            name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()
        }
        snap.statements, snap.transaction_statements, snap.texts = self.counts()
        return snap


def delta(before: Snapshot, after: Snapshot) -> dict:
    """CPU seconds (a process new since ``before`` counts from 0) and counts."""

    def cpu(a: dict[int, float], b: dict[int, float]) -> float:
        return sum(max(b[pid] - a.get(pid, 0.0), 0.0) for pid in b)

    calls = {
        name: after.redis_calls.get(name, 0) - before.redis_calls.get(name, 0)
        for name in after.redis_calls
        if name not in ("info", "config|get", "config", "flushdb", "ping")
    }
    return {
        "app_cpu": cpu(before.app, after.app),
        "postgres_cpu": cpu(before.postgres, after.postgres),
        "redis_cpu": after.redis_cpu - before.redis_cpu,
        "redis_commands": sum(calls.values()),
        "redis_by_command": {k: v for k, v in sorted(calls.items()) if v},
        "statements": after.statements - before.statements,
        "transaction_statements": after.transaction_statements - before.transaction_statements,
        "texts": {
            text: n - before.texts.get(text, 0)
            for text, n in after.texts.items()
            if n - before.texts.get(text, 0)
        },
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]
