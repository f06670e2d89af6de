"""Load ``manage.py runbot`` itself: real runner processes polling a Bot API double.

Where ``manage.py bench`` drives the handling code from its own threads, this starts
``--processes`` runbot processes (``runbot --all``: Redis leases, pollers, chat
workers, the batch path), lets ``--users`` simulated users of ``--bots`` bots talk to
them in rounds (every user makes the next move of the demo conversation, then the
round waits until every update is done), and prints messages per second per round.

Usage (a database and Redis db of the benchmark's own, as for ``manage.py bench``):
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bp_bench REDIS_URL=redis://127.0.0.1:6379/8 \\
    SECRET_KEY=... ALLOWED_HOSTS=localhost .venv/bin/python scripts/runbot_load.py \\
        [--users 1000 --bots 100 --rounds 4 --processes 2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botplatform.settings")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--bots", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=4, help="measured rounds after /start")
    parser.add_argument("--processes", type=int, default=2, help="runbot processes")
    options = parser.parse_args()

    import django

    django.setup()
    from django.core.cache import cache

    from botplatform.models import Bot, TelegramUpdate
    from devtools import bench
    from devtools.telegram_double import TelegramDouble

    _project_id, bots = bench.bench_setup(bots=options.bots)
    # Bots of earlier, larger runs would be polled too (runbot --all) and fail: off.
    Bot.objects.filter(username__startswith="bench_").exclude(pk__in=[pk for pk, _ in bots]).update(
        is_active=False
    )
    Bot.objects.filter(pk__in=[pk for pk, _ in bots]).update(is_active=True, status="ok")
    cache.clear()
    double = TelegramDouble().start()
    for _bot_id, token in bots:
        double.bot_add(token)
    users = [(bots[n % len(bots)][1], bench.CHAT_ID_BASE + n) for n in range(options.users)]
    env = {
        **os.environ,
        "TELEGRAM_API_URL": double.url,
        "TELEGRAM_POLL_TIMEOUT": "1",
        "TELEGRAM_DISCOVERY_INTERVAL": "2",
        "LOG_LEVEL": "WARNING",
    }
    runners = [
        subprocess.Popen(
            [sys.executable, "manage.py", "runbot", "--all"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(options.processes)
    ]
    bot_ids = [bot_id for bot_id, _ in bots]
    journal = TelegramUpdate.objects.filter(bot_id__in=bot_ids)
    results = []
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    try:
        for step in range(options.rounds + 1):
            done_before = journal.filter(status="done").count()
            started = time.perf_counter()
            with double._cond:  # the round arrives at once, as a burst (as in bench)
                for token, chat in users:
                    bench._next_update(double, token, chat, step)
            target = done_before + len(users)
            while journal.filter(status="done").count() < target:
                if any(runner.poll() is not None for runner in runners):
                    raise SystemExit("a runbot process exited")
                if time.perf_counter() - started > 300:
                    raise SystemExit("round timed out")
                time.sleep(0.02)
            seconds = time.perf_counter() - started
            result = {
                "round": step,
                "warm_up": step == 0,
                "messages": len(users),
                "seconds": round(seconds, 3),
                "messages_per_second": round(len(users) / seconds, 1),
            }
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        for runner in runners:
            runner.send_signal(signal.SIGTERM)
        for runner in runners:
            runner.wait(60)
        double.stop()
    measured = [r for r in results if not r["warm_up"]]
    total = sum(r["messages"] for r in measured)
    seconds = sum(r["seconds"] for r in measured)
    print(
        json.dumps(
            {
                "processes": options.processes,
                "users": options.users,
                "bots": options.bots,
                "messages": total,
                "messages_per_second": round(total / seconds, 1) if seconds else 0,
                "errors": journal.exclude(status="done").count(),
                # This process plays Telegram for every runner (one double, one GIL):
                # near 1.0, it is what limits the figure, not runbot.
                "double_process_busy": round(
                    (time.process_time() - cpu_started) / (time.perf_counter() - wall_started), 2
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
