"""The daily rollups against the raw rows: generated traffic, a re-run, late events."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.utils import timezone

from analytics.models import CohortWeek, LevelMoveDay, ProjectDay, StepDay, UserDay, WorkflowDay
from analytics.rollups import rollup_days, rollup_rebuild, rollup_run, runs_of
from tests.analytics.traffic import (
    at,
    execution_add,
    funnel_oracle,
    generate,
    ledger_add,
    level_move_add,
    level_moves_oracle,
    oracle,
)
from users.models import BotUser
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db


def _rows(project_id: int) -> dict[date, dict]:
    keys = None
    out = {}
    for row in ProjectDay.objects.filter(project_id=project_id).values():
        keys = keys or [k for k in row if k not in ("id", "project_id", "day", "computed_at")]
        out[row["day"]] = {k: row[k] for k in keys}
    return out


def _check(project, first: date, last: date) -> None:
    expected = oracle(project.pk, first, last)
    rows = _rows(project.pk)
    for day, figures in expected.items():
        got = rows.get(day)
        assert got is not None, f"no row for {day}"
        assert {k: got[k] for k in figures} == figures, day


def _funnel(workflow_id: int) -> dict:
    out = {}
    for row in WorkflowDay.objects.filter(workflow_id=workflow_id):
        out[(row.version_id, row.day)] = (
            row.started,
            row.completed,
            row.failed,
            row.timed_out,
            row.interrupted,
            row.in_progress,
            {
                s.step: s.reached
                for s in StepDay.objects.filter(
                    workflow_id=workflow_id, version_id=row.version_id, day=row.day
                )
            },
        )
    return out


def _snapshot() -> list:
    return [
        sorted(
            tuple(v for k, v in row.items() if k not in ("id", "computed_at"))
            for row in model.objects.values()
        )
        for model in (ProjectDay, UserDay, WorkflowDay, StepDay, CohortWeek, LevelMoveDay)
    ]


def _level_moves(project_id: int) -> dict:
    return {
        (row.day, row.from_level, row.to_level): row.moves
        for row in LevelMoveDay.objects.filter(project_id=project_id)
    }


def test_runs_of_groups_consecutive_days():
    d = date(2026, 1, 1)
    days = [d, d + timedelta(days=1), d + timedelta(days=3), d, d + timedelta(days=2)]
    assert runs_of(days) == [(d, d + timedelta(days=3))]
    assert runs_of([d, d + timedelta(days=5)]) == [(d, d), (d + timedelta(days=5),) * 2]


@pytest.mark.parametrize("seed", [1, 2])
def test_rebuild_matches_the_raw_rows_and_a_rerun_gives_the_same_rows(seed):
    today = timezone.now().date()
    project, workflow = generate(seed=seed, today=today)
    rollup_rebuild(now=at(today, 23))
    first = min(u.first_seen_at.date() for u in BotUser.objects.filter(project=project))
    _check(project, first, today)
    assert _funnel(workflow.pk) == funnel_oracle(workflow.pk)
    assert _level_moves(project.pk) == level_moves_oracle(project.pk)
    assert _level_moves(project.pk)  # the traffic has moves (the oracle is not vacuous)
    before = _snapshot()
    rollup_rebuild(now=at(today, 23))
    rollup_days([today - timedelta(days=3), today], today=today)
    assert _snapshot() == before


def test_late_events_are_corrected_by_the_next_run():
    today = timezone.now().date()
    project, workflow = generate(seed=7, today=today)
    rollup_rebuild()
    user = BotUser.objects.filter(project=project, is_test=False).order_by("pk").first()
    old = today - timedelta(days=12)
    # A ledger entry recorded now for an old day, a conversation of 8 days ago that
    # finishes now, and a step reached late by a conversation of 5 days ago.
    ledger_add(user, 40, "earn", at(old, 8), "late-ledger")
    ledger_add(user, -10, "spend", at(old, 9), "late-spend")
    level_move_add(user, "b", "c", at(old - timedelta(days=2), 8), "late-move")
    waiting = execution_add(workflow, user, today - timedelta(days=8), reached=1, status="waiting")
    rollup_run()
    WorkflowExecution.objects.filter(pk=waiting.pk).update(
        status="completed", finished_at=timezone.now()
    )
    other = execution_add(workflow, user, today - timedelta(days=5), reached=1, status="waiting")
    rollup_run()
    other.step_logs.create(step="offer", step_type="message")
    result = rollup_run()
    assert (today - timedelta(days=5)).isoformat() in result["late_days"]
    first = min(u.first_seen_at.date() for u in BotUser.objects.filter(project=project))
    _check(project, first, today)
    assert _funnel(workflow.pk) == funnel_oracle(workflow.pk)
    row = ProjectDay.objects.get(project=project, day=old)
    assert row.earned >= 40 and row.spent >= 10 and row.redemptions >= 1
    assert _level_moves(project.pk) == level_moves_oracle(project.pk)
    assert _level_moves(project.pk)[(old - timedelta(days=2), "b", "c")] >= 1


def test_user_days_keep_the_last_activity_of_the_day():
    today = timezone.now().date()
    project, workflow = generate(seed=4, today=today, days=6, members=8)
    user = BotUser.objects.filter(project=project, is_test=False).order_by("pk").first()
    day = today - timedelta(days=2)
    ledger_add(user, 5, "earn", at(day, 7), "last-1")
    ledger_add(user, 5, "earn", at(day, 21), "last-2")
    execution_add(workflow, user, day, reached=1, status="completed")  # at 10:00
    rollup_rebuild()
    row = UserDay.objects.get(project_id=project.pk, user_id=user.pk, day=day)
    from users.models import BonusTransaction

    moments = [
        *BonusTransaction.objects.filter(user=user).values_list("created_at", flat=True),
        *WorkflowExecution.objects.filter(user=user).values_list("started_at", flat=True),
    ]
    assert row.last_at == max(m for m in moments if m.date() == day)
    assert row.last_at.hour >= 21


def test_levels_snapshot_is_taken_for_today_and_kept_for_past_days():
    today = timezone.now().date()
    project, _ = generate(seed=3, today=today, days=3, members=6)
    rollup_run(now=at(today, 12))
    row = ProjectDay.objects.get(project=project, day=today)
    counts = {}
    for level in BotUser.objects.filter(project=project, is_test=False).values_list(
        "level", flat=True
    ):
        counts[level] = counts.get(level, 0) + 1
    assert row.levels == counts
    # Tomorrow the levels change; yesterday's snapshot stays what it was.
    BotUser.objects.filter(project=project).update(level="gold")
    rollup_run(now=at(today + timedelta(days=1), 1))
    assert ProjectDay.objects.get(project=project, day=today).levels == counts


def test_weekly_cohorts_match_the_raw_activity():
    from collections import defaultdict

    from analytics.models import CohortWeek
    from analytics.rollups import week_of
    from users.models import BonusTransaction

    today = timezone.now().date()
    project, _workflow = generate(seed=5, today=today, days=30, members=30)
    rollup_rebuild()
    joined = {
        u.pk: week_of(u.first_seen_at.date())
        for u in BotUser.objects.filter(project=project, is_test=False)
    }
    expected = defaultdict(set)
    for user_id, moment in [
        *BonusTransaction.objects.filter(project=project).values_list("user_id", "created_at"),
        *WorkflowExecution.objects.filter(project=project).values_list("user_id", "started_at"),
    ]:
        if user_id in joined:
            expected[(joined[user_id], week_of(moment.date()))].add(user_id)
    got = {
        (row.cohort_week, row.active_week): row.users
        for row in CohortWeek.objects.filter(project_id=project.pk)
    }
    assert got == {key: len(users) for key, users in expected.items()}


def test_the_portable_path_writes_the_same_user_days_as_the_sql_one(monkeypatch):
    """SQLite (the embedded default) takes the ORM path; PostgreSQL one INSERT … SELECT."""
    from analytics import rollups

    today = timezone.now().date()
    generate(seed=9, today=today, days=10, members=12)
    fields = ("project_id", "user_id", "day", "cohort_week", "last_at")
    rollup_rebuild()
    fast = sorted(UserDay.objects.values_list(*fields))
    monkeypatch.setattr(rollups, "_insert_select", lambda: False)  # only the branch
    rollup_rebuild()
    portable = sorted(UserDay.objects.values_list(*fields))
    assert portable == fast and fast
    assert all(row[-1] is not None for row in fast)


def test_phone_linked_counts_members_who_shared_their_phone_up_to_each_day():
    from users.customers import customer_create, customer_link_phone

    today = timezone.now().date()
    project, _ = generate(seed=5, today=today, days=6, members=12)
    # A till customer has a phone but never shared it in the bot: not counted. Sharing
    # that phone in the bot today merges it into the Telegram member, who then counts.
    member = BotUser.objects.filter(project=project, is_test=False, phone="").first()
    customer_create(project_id=project.pk, phone="+4915199990000")
    rollup_run(now=timezone.now())
    before = ProjectDay.objects.get(project=project, day=today).phone_linked
    assert before == oracle(project.pk, today, today)[today]["phone_linked"]
    customer_link_phone(user=member, phone="+4915199990000")
    rollup_run(now=timezone.now())
    assert ProjectDay.objects.get(project=project, day=today).phone_linked == before + 1
    _check(project, today - timedelta(days=5), today)
    # Each past day counts the phones shared up to its end, not today's total.
    by_day = dict(ProjectDay.objects.filter(project=project).values_list("day", "phone_linked"))
    assert sorted(by_day.values()) == list(by_day[d] for d in sorted(by_day))
    assert by_day[min(by_day)] < by_day[today]
