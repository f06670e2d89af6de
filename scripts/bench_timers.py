"""Timer precision benchmark: how late do wait timeouts and delays fire?

Creates ``--conversations`` conversations (half waiting for an answer with a
timeout, half paused on a delay) whose due times are spread over the next
``--spread`` seconds, runs ``--pollers`` timer pollers (``botplatform.periodic.TimerLoop``,
as the bot runner does) in threads, and records when each conversation's
continuation is delivered. Lateness = delivery time - due time. Prints the
distribution (p50/p95/max) and how many fired more than once (must be 0). Uses the
configured PostgreSQL (point DATABASE_URL at a database of its own, migrated).
Run from the project root:

    DJANGO_SETTINGS_MODULE=botplatform.settings DATABASE_URL=... REDIS_URL=... \
        SECRET_KEY=... python scripts/bench_timers.py [--conversations 400] [--pollers 2]

A benchmark, not a test: it asserts nothing. Figures in docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from datetime import timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=400)
    parser.add_argument("--spread", type=float, default=20.0, help="seconds (default 20)")
    parser.add_argument("--pollers", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.5, help="poll interval, s")
    options = parser.parse_args()

    import django

    django.setup()
    from django.db import close_old_connections, connection
    from django.utils import timezone

    from botplatform.conversation import InputEvent
    from botplatform.models import Project
    from botplatform.periodic import TimerLoop
    from users.models import BotUser
    from workflows.delivery import delivery_register
    from workflows.models import Workflow, WorkflowExecution
    from workflows.services import event_process, workflow_publish

    stamp = int(time.time())
    project = Project.objects.create(name=f"Timer bench {stamp}", slug=f"timer-bench-{stamp}")
    ask = {
        "start": "ask",
        "steps": {
            "ask": {"type": "input", "text": "?", "variable": "a", "timeout": 3600,
                    "on_timeout": "late", "next": "ok"},
            "ok": {"type": "end"},
            "late": {"type": "message", "text": "late"},
        },
    }  # fmt: skip
    delay = {
        "start": "wait",
        "steps": {
            "wait": {"type": "delay", "minutes": 60, "next": "hello"},
            "hello": {"type": "message", "text": "later"},
        },
    }
    for slug, definition in (("ask", ask), ("later", delay)):
        workflow = Workflow.objects.create(
            project=project,
            name=slug,
            slug=slug,
            draft=definition,
            triggers=[{"type": "command", "command": slug}],
        )
        workflow_publish(workflow=workflow)

    delivered: dict[int, list[float]] = {}
    lock = threading.Lock()

    def record(*, bot_id, chat_id, actions) -> None:
        with lock:
            delivered.setdefault(chat_id, []).append(time.time())

    delivery_register(record)
    print(f"creating {options.conversations} conversations ...", flush=True)
    due: dict[int, float] = {}
    for index in range(options.conversations):
        user = BotUser.objects.create(
            project=project, telegram_id=10**9 + index, chat_id=10**9 + index, first_name="B"
        )
        event_process(
            user=user,
            event=InputEvent(kind="command", command="ask" if index % 2 else "later"),
        )
    start = time.time() + 2.0
    executions = list(WorkflowExecution.objects.filter(project=project).select_related("user"))
    for execution in executions:
        at = start + random.uniform(0, options.spread)
        execution.wait_until = timezone.now() + timedelta(seconds=at - time.time())
        due[execution.user.chat_id] = execution.wait_until.timestamp()
        WorkflowExecution.objects.filter(pk=execution.pk).update(wait_until=execution.wait_until)

    stop = threading.Event()

    def poll() -> None:
        TimerLoop(interval=options.interval).run(stop)
        connection.close()

    threads = [threading.Thread(target=poll) for _ in range(options.pollers)]
    for thread in threads:
        thread.start()
    deadline = start + options.spread + 30
    while time.time() < deadline and len(delivered) < len(due):
        time.sleep(0.2)
    time.sleep(2)  # anything fired twice would show up now
    stop.set()
    for thread in threads:
        thread.join(10)
    close_old_connections()

    lateness = [times[0] - due[chat] for chat, times in delivered.items()]
    twice = sum(1 for times in delivered.values() if len(times) > 1)
    print(
        f"{len(delivered)}/{len(due)} fired, {twice} more than once; "
        f"{options.pollers} poller(s) every {options.interval:g} s"
    )
    if lateness:
        p50, p95 = _percentile(lateness, 0.5), _percentile(lateness, 0.95)
        print(
            f"lateness s: p50 {p50:.3f}  p95 {p95:.3f}  "
            f"max {max(lateness):.3f}  min {min(lateness):.3f}"
        )
    print(f"(left project {project.slug} in the database)")


if __name__ == "__main__":
    main()
