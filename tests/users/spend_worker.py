"""A separate process that spends bonuses: ``python -m tests.users.spend_worker``.

Started by the concurrency tests with DATABASE_URL pointing at the test database.
Waits for the go-file so that all workers start together, runs its spends, and
prints one JSON list of statuses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--user", type=int, required=True)
    parser.add_argument("--amount", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--key-prefix", required=True)
    parser.add_argument("--go-file", required=True)
    parser.add_argument(
        "--no-locks", action="store_true", help="Redis unreachable, no fallback lock, no spend lock"
    )
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botplatform.settings")
    import django

    django.setup()
    from django.db import connection

    from botplatform import locks
    from users import ledger
    from users.ledger import bonus_spend

    if args.no_locks:
        import contextlib

        import redis

        dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
        locks._redis = lambda: dead
        locks._fallback_lock = lambda key: contextlib.nullcontext()
        # PostgreSQL's one-statement spend: its lock try always succeeds.
        ledger._SPEND_SQL = ledger._spend_sql("true")
    connection.ensure_connection()

    deadline = time.monotonic() + 30
    while not os.path.exists(args.go_file):
        if time.monotonic() > deadline:
            sys.exit("go-file never appeared")
        time.sleep(0.002)
    statuses = []
    for n in range(args.count):
        result = bonus_spend(
            user_id=args.user, amount=args.amount, idempotency_key=f"{args.key_prefix}:{n}"
        )
        statuses.append(result.status)
    connection.close()
    print(json.dumps(statuses))


if __name__ == "__main__":
    main()
