"""``manage.py`` with every SQL statement counted: the load driver starts the real
``runbot --all`` (and gunicorn's workers, through ``wsgi_counted``) this way.

    PEER_COUNT_FILE=/tmp/x.json python benchmarks/peers/counted.py runbot --all

Statements are counted by a ``connection.execute_wrapper`` installed on every
database connection the process opens (so also savepoints and the connection
check's ``SELECT 1``); BEGIN/COMMIT/ROLLBACK, which psycopg sends itself, are
counted from Django's commit and rollback calls (one BEGIN each). The counts are
rewritten to ``PEER_COUNT_FILE`` 5 times a second, one file per process.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from pathlib import Path

# The checkout whose runner is measured: this one, or another (``run.py --runner-root``,
# e.g. an older commit exported with ``git archive``), to compare before and after.
ROOT = Path(os.environ.get("PEER_RUNNER_ROOT") or Path(__file__).resolve().parents[2])
COUNTS = {"statements": 0, "transaction_statements": 0}
TEXTS: dict[str, int] = {}  # the statements by their first 90 characters
HEALTH_CHECK = "SELECT 1 (Django's connection health check; not in the statement count)"
_lock = threading.Lock()
_SAVEPOINT_NAME = re.compile(r'"s\d+_x\d+"')


def _count(key: str, n: int = 1) -> None:
    with _lock:
        COUNTS[key] += n


def install() -> None:
    """Count from now on in this process (call before Django opens connections)."""
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.backends.signals import connection_created

    def counter(execute, sql, params, many, context):
        # Savepoint names are unique ("s140221162186432_x477"): one key for them all, or
        # the table grows by one entry per savepoint and rewriting it (below) costs the
        # measured process more CPU the longer it runs.
        head = _SAVEPOINT_NAME.sub('"<savepoint>"', " ".join(str(sql).split())[:90])
        with _lock:
            COUNTS["statements"] += 1
            TEXTS[head] = TEXTS.get(head, 0) + 1
        return execute(sql, params, many, context)

    def created(sender, connection, **kwargs):
        if counter not in connection.execute_wrappers:
            connection.execute_wrappers.append(counter)

    connection_created.connect(created, weak=False)
    commit, rollback = BaseDatabaseWrapper._commit, BaseDatabaseWrapper._rollback

    def counted_commit(self):
        _count("transaction_statements", 2)  # BEGIN and COMMIT
        return commit(self)

    def counted_rollback(self):
        _count("transaction_statements", 2)
        return rollback(self)

    BaseDatabaseWrapper._commit = counted_commit
    BaseDatabaseWrapper._rollback = counted_rollback

    # Django's connection health check (CONN_HEALTH_CHECKS) sends its SELECT 1 on the
    # driver's connection directly, past the execute wrappers: counted apart.
    from django.db.backends.postgresql.base import DatabaseWrapper

    is_usable = DatabaseWrapper.is_usable

    def counted_is_usable(self):
        with _lock:
            TEXTS[HEALTH_CHECK] = TEXTS.get(HEALTH_CHECK, 0) + 1
        return is_usable(self)

    DatabaseWrapper.is_usable = counted_is_usable
    path = os.environ.get("PEER_COUNT_FILE")
    if path:
        path = f"{path}.{os.getpid()}"

        def write() -> None:
            written = None
            while True:
                with _lock:
                    now = (dict(COUNTS), len(TEXTS))
                    data = (
                        None
                        if now == written
                        else json.dumps({**COUNTS, "pid": os.getpid(), "texts": TEXTS})
                    )
                if data is not None:  # nothing new: no rewrite
                    Path(f"{path}.tmp").write_text(data)
                    os.replace(f"{path}.tmp", path)
                    written = now
                time.sleep(0.2)

        threading.Thread(target=write, daemon=True, name="peer-counts").start()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botplatform.settings")
    install()
    from django.core.management import execute_from_command_line

    execute_from_command_line(["manage.py", *sys.argv[1:]])
