#!/usr/bin/env python
"""Benchmark of the programme analytics on a generated year of one project.

At --scale 1: 200k members, 2M ledger rows, 10M step logs (about 2.2M conversations
of an 8-step workflow), level moves of one member in ten, and a broadcast a month to
every member with its message ids and presses by a fifth of them in the update
journal, spread over the last 365 days, generated in SQL
(generate_series) straight into PostgreSQL. Then it measures, and prints:

- one day's rollup (what the periodic task does every few minutes: today, yesterday
  and the days with late data; a late ledger entry of 40 days ago is added first);
- a full rebuild (every day of the year, and every button press in the journal);
- the response time of the programme dashboard (30 days and a year), the funnel,
  the broadcast results, a CSV and a JSON export, and the home page (median of 5).

Usage (a database of its own; it is created when missing and emptied first):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bp_bench \\
        .venv/bin/python scripts/bench_analytics.py --scale 0.1

The figures go to docs/performance.md by hand. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botplatform.settings")
os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost")

STEPS = 8
DEFINITION = {
    "start": "s1",
    "steps": {
        **{
            f"s{i}": {"type": "message", "text": f"Step {i}", "next": f"s{i + 1}"}
            for i in range(1, STEPS)
        },
        f"s{STEPS}": {"type": "end"},
    },
}


def timed(label: str, fn, *, results: dict):
    started = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - started
    results[label] = seconds
    print(f"{label:<48} {seconds * 1000:>10.0f} ms", flush=True)
    return value


def generate(cursor, *, scale: float, project_id: int, workflow_id: int, version_id: int) -> dict:
    members = int(200_000 * scale)
    ledger = int(2_000_000 * scale)
    step_logs = int(10_000_000 * scale)
    executions = int(step_logs / ((STEPS + 1) / 2))
    start = "now() - interval '365 days'"  # a constant: the f-strings below hold no input
    cursor.execute(
        "INSERT INTO users_botuser (project_id, telegram_id, chat_id, username, first_name, "
        "last_name, language_code, referral_code, level, balance, lifetime_earned, is_blocked, "
        "is_test, first_seen_at, last_seen_at, card_code, phone, source, language) "
        f"SELECT %s, 10000000 + i, 10000000 + i, '', 'U' || i, '', '', 'r' || i, "
        f"(ARRAY['bronze','silver','gold'])[1 + i %% 3], 0, 0, false, false, "
        f"{start} + random() * interval '365 days', now(), '', '', 'telegram', '' "
        "FROM generate_series(1, %s) i",
        [project_id, members],
    )
    cursor.execute("SELECT min(id) FROM users_botuser WHERE project_id = %s", [project_id])
    first = cursor.fetchone()[0]
    cursor.execute(
        "UPDATE users_botuser SET referrer_id = id - 37 WHERE project_id = %s AND id %% 9 = 0 "
        "AND id - 37 >= %s",
        [project_id, first],
    )
    cursor.execute(
        "INSERT INTO users_bonustransaction (project_id, user_id, amount, kind, reason, "
        "idempotency_key, balance_after, created_at) "
        "SELECT %s, %s + floor(random() * %s)::int, "
        "(ARRAY[50, -30, -5, 15, -7])[k + 1], "
        "(ARRAY['earn','spend','expiry','referral','adjust'])[k + 1], '', 'bench-' || i, 0, "
        f"{start} + random() * interval '365 days' "
        "FROM (SELECT i, floor(random() * 5)::int AS k FROM generate_series(1, %s) i) s",
        [project_id, first, members, ledger],
    )
    cursor.execute(
        "INSERT INTO workflows_workflowexecution (project_id, workflow_id, version_id, user_id, "
        "session_key, status, current_step, context, error, started_at, updated_at, finished_at) "
        "SELECT %s, %s, %s, %s + floor(random() * %s)::int, 'bench:' || i, st, '', '{}', "
        "CASE WHEN st = 'cancelled' THEN 'timed out waiting for the user' ELSE '' END, t, t, "
        "CASE WHEN st IN ('completed', 'failed', 'cancelled') THEN t + interval '5 minutes' END "
        f"FROM (SELECT i, {start} + random() * interval '365 days' AS t, "
        "(ARRAY['completed','completed','completed','failed','cancelled','waiting'])"
        "[1 + floor(random() * 6)::int] AS st FROM generate_series(1, %s) i) s",
        [project_id, workflow_id, version_id, first, members, executions],
    )
    cursor.execute(
        "INSERT INTO workflows_executionsteplog (execution_id, step, step_type, input, output, "
        "duration_ms, error, created_at) "
        "SELECT e.id, 's' || g, 'message', '{}', '{}', 1.0, '', e.started_at "
        "FROM workflows_workflowexecution e CROSS JOIN generate_series(1, %s) g "
        "WHERE e.project_id = %s AND g <= 1 + e.id %% %s",
        [STEPS, project_id, STEPS],
    )
    # Level moves: one in ten members moved up once (the level history).
    cursor.execute(
        "INSERT INTO users_levelchange (project_id, user_id, from_level, to_level, cause, "
        "idempotency_key, at) "
        "SELECT %s, id, 'bronze', 'silver', 'ledger', 'bench-move-' || id, "
        f"{start} + random() * interval '365 days' "
        "FROM users_botuser WHERE project_id = %s AND id %% 10 = 0",
        [project_id, project_id],
    )
    _broadcasts(cursor, project_id=project_id, members=members, start=start)
    cursor.execute("ANALYZE")
    counts = {}
    for table in (
        "users_botuser",
        "users_bonustransaction",
        "users_levelchange",
        "workflows_workflowexecution",
        "workflows_executionsteplog",
        "workflows_broadcastdelivery",
        "workflows_broadcastmessage",
        "botplatform_telegramupdate",
    ):
        cursor.execute(f"SELECT count(*) FROM {table}")
        counts[table] = cursor.fetchone()[0]
    return counts


BROADCASTS = 12  # one a month, each to every member


def _broadcasts(cursor, *, project_id: int, members: int, start: str) -> None:
    """A broadcast a month to every member: deliveries, the messages sent (their ids)
    and, in the update journal, button presses on a fifth of them."""
    from botplatform.models import Bot
    from workflows.models import Broadcast

    bot = Bot.objects.create(project_id=project_id, token="1:bench", username="bench_bot")
    for month in range(BROADCASTS):
        sent_at = f"{start} + interval '{30 * month + 1} days'"
        broadcast = Broadcast.objects.create(
            project_id=project_id, title=f"Monthly news {month + 1}", text="News", status="done"
        )
        cursor.execute(
            f"UPDATE workflows_broadcast SET started_at = {sent_at}, "
            f"finished_at = {sent_at} + interval '1 hour', total = %s, sent = %s WHERE id = %s",
            [members, members, broadcast.pk],
        )
        cursor.execute(
            "INSERT INTO workflows_broadcastdelivery (broadcast_id, user_id, status, error, "
            "claimed_at, finished_at) "
            f"SELECT %s, u.id, 'sent', '', {sent_at}, {sent_at} + (u.id %% 3600) * interval "
            "'1 second' FROM users_botuser u WHERE u.project_id = %s",
            [broadcast.pk, project_id],
        )
        cursor.execute(
            "INSERT INTO workflows_broadcastmessage (broadcast_id, user_id, bot_id, chat_id, "
            "message_id, sent_at) "
            f"SELECT %s, u.id, %s, u.chat_id, 1000 + %s, {sent_at} "
            "FROM users_botuser u WHERE u.project_id = %s",
            [broadcast.pk, bot.pk, month, project_id],
        )
        cursor.execute(
            "INSERT INTO botplatform_telegramupdate (bot_id, update_id, chat_id, payload, "
            "status, actions, sent_count, attempts, stalls, note, received_at, done_at) "
            "SELECT %s, %s * 10000000 + u.id, u.chat_id, jsonb_build_object('update_id', "
            "%s * 10000000 + u.id, 'callback_query', jsonb_build_object('id', 'q' || u.id, "
            "'data', 'yes', 'message', jsonb_build_object('message_id', 1000 + %s, "
            "'chat', jsonb_build_object('id', u.chat_id)))), 'done', '[]', 0, 0, 0, '', "
            f"{sent_at} + interval '2 hours', {sent_at} + interval '2 hours' "
            "FROM users_botuser u WHERE u.project_id = %s AND u.id %% 5 = %s",
            [bot.pk, month + 1, month + 1, month, project_id, month % 5],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1 = 200k members, 10M step logs")
    parser.add_argument("--keep", action="store_true", help="reuse the data already generated")
    parser.add_argument(
        "--pages-only", action="store_true", help="with --keep: only the page times"
    )
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("Set DATABASE_URL to a PostgreSQL database of its own (it is emptied).")

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from analytics.models import (
        BroadcastPress,
        LevelMoveDay,
        ProjectDay,
        StepDay,
        UserDay,
        WorkflowDay,
    )
    from analytics.rollups import rollup_rebuild, rollup_run
    from botplatform.dbcreate import database_ensure
    from botplatform.models import Project
    from users.models import BonusTransaction, BotUser
    from workflows.models import Workflow, WorkflowVersion

    database_ensure(connection.settings_dict)
    call_command("migrate", verbosity=0)
    results: dict[str, float] = {}
    if not args.keep:
        with connection.cursor() as cursor:
            cursor.execute(
                "TRUNCATE workflows_executionsteplog, workflows_workflowexecution, "
                "users_bonustransaction, users_botuser, analytics_userday, analytics_projectday, "
                "analytics_workflowday, analytics_stepday, analytics_rollupstate, "
                "users_levelchange, analytics_levelmoveday, analytics_broadcastpress, "
                "workflows_broadcastmessage, workflows_broadcastdelivery, workflows_broadcast, "
                "botplatform_telegramupdate CASCADE"
            )
        Project.objects.filter(slug="bench").delete()
    project, _ = Project.objects.get_or_create(slug="bench", defaults={"name": "Benchmark"})
    workflow, created = Workflow.objects.get_or_create(
        project=project, slug="onboarding", defaults={"name": "Onboarding", "draft": DEFINITION}
    )
    if created:
        version = WorkflowVersion.objects.create(
            workflow=workflow, number=1, definition=DEFINITION, checksum="0" * 64
        )
        Workflow.objects.filter(pk=workflow.pk).update(published_version=version)
    version = WorkflowVersion.objects.get(workflow=workflow, number=1)
    if not args.keep:
        with connection.cursor() as cursor:
            counts = timed(
                f"generate (scale {args.scale})",
                lambda: generate(
                    cursor,
                    scale=args.scale,
                    project_id=project.pk,
                    workflow_id=workflow.pk,
                    version_id=version.pk,
                ),
                results=results,
            )
        for table, n in counts.items():
            print(f"  {table:<40} {n:>12,}")

    if args.pages_only:
        return _pages(project, workflow, results)
    timed("full rebuild (every day of the year)", rollup_rebuild, results=results)
    print(
        f"  rollup rows: {ProjectDay.objects.count():,} project days, "
        f"{UserDay.objects.count():,} user days, {WorkflowDay.objects.count():,} workflow "
        f"days, {StepDay.objects.count():,} step days, {LevelMoveDay.objects.count():,} "
        f"level move days, {BroadcastPress.objects.count():,} broadcast presses"
    )
    timed("one run with nothing late (today + yesterday)", rollup_run, results=results)
    # Late data: a ledger entry for 40 days ago, recorded now.
    user = BotUser.objects.filter(project=project).first()
    late = BonusTransaction.objects.create(
        project=project,
        user=user,
        amount=10,
        kind="earn",
        idempotency_key=f"bench-late-{time.time()}",
        balance_after=10,
    )
    BonusTransaction.objects.filter(pk=late.pk).update(
        created_at=timezone.now() - timezone.timedelta(days=40)
    )
    timed("one run with a late entry (+ its 30 days)", rollup_run, results=results)

    _pages(project, workflow, results)


def _pages(project, workflow, results: dict) -> None:
    from django.contrib.auth.models import User
    from django.test import Client
    from django.utils import timezone

    User.objects.filter(username="bench").delete()
    admin = User.objects.create_superuser("bench", password="bench")
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(admin)
    base = f"/admin/botplatform/project/{project.pk}/programme/"
    pages = {
        "home page": "/admin/",
        "programme, 30 days": base,
        "programme, a year (custom)": base
        + "?period=custom&start="
        + (timezone.now().date() - timezone.timedelta(days=364)).isoformat(),
        "funnel, 30 days": base + f"funnel/?workflow={workflow.pk}",
        "broadcast results": base + "broadcasts/",
        "broadcast results, a year (12 broadcasts)": base
        + "broadcasts/?period=custom&start="
        + (timezone.now().date() - timezone.timedelta(days=364)).isoformat(),
        "export broadcasts CSV, a year": base
        + "export/?table=broadcasts&format=csv&period=custom&start="
        + (timezone.now().date() - timezone.timedelta(days=364)).isoformat(),
        "export daily CSV, a year": base
        + "export/?table=daily&format=csv&period=custom&start="
        + (timezone.now().date() - timezone.timedelta(days=364)).isoformat(),
        "export all JSON, 30 days": base + "export/?table=summary&format=json",
        "export funnel CSV": base + f"export/?table=funnel&format=csv&workflow={workflow.pk}",
    }
    print("page (median of 5, after one warm-up)")
    for label, url in pages.items():
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        times = []
        for _ in range(5):
            started = time.perf_counter()
            client.get(url)
            times.append(time.perf_counter() - started)
        results[label] = statistics.median(times)
        print(f"  {label:<46} {statistics.median(times) * 1000:>10.0f} ms", flush=True)


if __name__ == "__main__":
    main()
