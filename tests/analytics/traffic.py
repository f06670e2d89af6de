"""Generated programme traffic with known raw rows, and an oracle computed from them.

The oracle is written independently of ``analytics.rollups`` (plain Python over the
raw rows) so that a wrong aggregation there fails the comparison.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta

from tests.factories import bot_user_create, execution_create, project_create, workflow_create
from users.models import BonusTransaction, BotUser, LevelChange
from workflows.models import ExecutionStepLog, WorkflowExecution

_sessions = itertools.count(1)
STEPS = ["ask", "offer", "confirm", "done"]
DEFINITION = {
    "start": "ask",
    "steps": {
        "ask": {"type": "message", "text": "hi", "next": "offer"},
        "offer": {"type": "message", "text": "offer", "next": "confirm"},
        "confirm": {"type": "message", "text": "ok?", "next": "done"},
        "done": {"type": "end"},
    },
}


def at(day: date, hour: int = 12) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=UTC)


def ledger_add(user: BotUser, amount: int, kind: str, when: datetime, key: str) -> None:
    row = BonusTransaction.objects.create(
        project_id=user.project_id,
        user=user,
        amount=amount,
        kind=kind,
        idempotency_key=key,
        balance_after=max(amount, 0),
    )
    BonusTransaction.objects.filter(pk=row.pk).update(created_at=when)


def level_move_add(user: BotUser, source: str, target: str, when: datetime, key: str):
    """A raw level move, as the ledger records it (``users.levels``)."""
    return LevelChange.objects.create(
        project_id=user.project_id,
        user=user,
        from_level=source,
        to_level=target,
        cause="ledger",
        idempotency_key=key,
        at=when,
    )


def execution_add(workflow, user, day: date, *, reached: int, status: str, error: str = ""):
    execution = execution_create(
        workflow=workflow,
        user=user,
        status=status,
        error=error,
        session_key=f"{user.project_id}:{user.chat_id}:{next(_sessions)}",
    )
    started = at(day, 10)
    WorkflowExecution.objects.filter(pk=execution.pk).update(
        started_at=started,
        finished_at=None if status in ("running", "waiting") else started + timedelta(minutes=5),
    )
    for step in STEPS[:reached]:
        ExecutionStepLog.objects.create(execution=execution, step=step, step_type="message")
    return execution


def generate(*, seed: int, today: date, days: int = 20, members: int = 25):
    """A project with members, ledger entries and conversations over ``days`` days."""
    rng = random.Random(seed)
    project = project_create()
    workflow = workflow_create(project=project, definition=DEFINITION)
    start = today - timedelta(days=days - 1)
    users = []
    for i in range(members):
        joined = start + timedelta(days=rng.randrange(days))
        referrer = rng.choice(users) if users and rng.random() < 0.3 else None
        user = bot_user_create(project=project, referrer=referrer, level=rng.choice("ab"))
        BotUser.objects.filter(pk=user.pk).update(first_seen_at=at(joined, 9))
        user.joined = joined
        users.append(user)
        ledger_add(user, 100, "earn", at(joined, 9), f"welcome-{seed}-{i}")
    test_user = bot_user_create(project=project, is_test=True)  # never counted
    ledger_add(test_user, 50, "earn", at(today, 9), f"test-{seed}")
    level_move_add(test_user, "a", "b", at(today, 9), f"test-move-{seed}")
    for i, user in enumerate(users):
        if rng.random() < 0.4:
            day = user.joined + timedelta(days=rng.randrange((today - user.joined).days + 1))
            source, target = rng.choice([("a", "b"), ("b", "c"), ("a", "c"), ("", "a")])
            level_move_add(user, source, target, at(day, rng.randrange(24)), f"mv-{seed}-{i}")
    n = 0
    for user in users:
        for _ in range(rng.randrange(4)):
            n += 1
            day = user.joined + timedelta(days=rng.randrange((today - user.joined).days + 1))
            kind, amount = rng.choice(
                [
                    ("earn", 30),
                    ("spend", -20),
                    ("expiry", -5),
                    ("adjust", -7),
                    ("adjust", 9),
                    ("referral", 15),
                ]
            )
            ledger_add(user, amount, kind, at(day, rng.randrange(24)), f"k-{seed}-{n}")
        for _ in range(rng.randrange(3)):
            day = user.joined + timedelta(days=rng.randrange((today - user.joined).days + 1))
            status, error = rng.choice(
                [
                    ("completed", ""),
                    ("failed", "boom"),
                    ("waiting", ""),
                    ("cancelled", "timed out waiting for the user"),
                    ("cancelled", "superseded"),
                ]
            )
            reached = 4 if status == "completed" else rng.randrange(1, 4)
            execution_add(workflow, user, day, reached=reached, status=status, error=error)
    # Phones shared in the bot on some day; a test user's phone is never counted.
    for i, user in enumerate([*users, test_user]):
        if user.is_test or rng.random() < 0.4:
            day = (
                today
                if user.is_test
                else user.joined + timedelta(days=rng.randrange((today - user.joined).days + 1))
            )
            BotUser.objects.filter(pk=user.pk).update(
                phone=f"+49151{seed:03d}{i:05d}", phone_linked_at=at(day, rng.randrange(24))
            )
    return project, workflow


def _dates(first: date, last: date):
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def oracle(project_id: int, first: date, last: date) -> dict[date, dict]:
    """What the ProjectDay rows of [first, last] must say, from the raw rows."""
    users = list(BotUser.objects.filter(project_id=project_id, is_test=False))
    real = {u.pk for u in users}
    ledger = [
        t for t in BonusTransaction.objects.filter(project_id=project_id) if t.user_id in real
    ]
    executions = [
        e for e in WorkflowExecution.objects.filter(project_id=project_id) if e.user_id in real
    ]
    activity = defaultdict(set)
    for t in ledger:
        activity[t.created_at.date()].add(t.user_id)
    for e in executions:
        activity[e.started_at.date()].add(e.user_id)
    out = {}
    for day in _dates(first, last):
        of_day = [t for t in ledger if t.created_at.date() == day]
        joined = [u for u in users if u.first_seen_at.date() == day]

        def window(n, day=day):
            return len(set().union(*(activity[day - timedelta(days=i)] for i in range(n))))

        started = [e for e in executions if e.started_at.date() == day]
        out[day] = {
            "members_new": len(joined),
            "members_total": sum(1 for u in users if u.first_seen_at.date() <= day),
            "phone_linked": sum(
                1
                for u in users
                if u.telegram_id is not None
                and u.phone
                and u.phone_linked_at
                and u.phone_linked_at.date() <= day
            ),
            "active_1d": window(1),
            "active_7d": window(7),
            "active_30d": window(30),
            "earned": sum(t.amount for t in of_day if t.kind in ("earn", "referral")),
            "spent": -sum(t.amount for t in of_day if t.kind == "spend"),
            "expired": -sum(t.amount for t in of_day if t.kind == "expiry"),
            "clawed_back": -sum(t.amount for t in of_day if t.kind == "adjust" and t.amount < 0),
            "added_by_operator": sum(
                t.amount for t in of_day if t.kind == "adjust" and t.amount > 0
            ),
            "net": sum(t.amount for t in of_day),
            "redemptions": sum(1 for t in of_day if t.kind == "spend"),
            "referrals_joined": sum(1 for u in joined if u.referrer_id),
            "referrers": len({u.referrer_id for u in joined if u.referrer_id}),
            "referrals_rewarded": sum(1 for t in of_day if t.kind == "referral"),
            "executions_started": len(started),
            "executions_completed": sum(1 for e in started if e.status == "completed"),
            "executions_failed": sum(1 for e in started if e.status == "failed"),
        }
    return out


def funnel_oracle(workflow_id: int) -> dict:
    """{(version, day): (started, completed, failed, timed out, interrupted, open, {step: n})}."""
    out = {}
    for e in WorkflowExecution.objects.filter(workflow_id=workflow_id, user__is_test=False):
        key = (e.version_id, e.started_at.date())
        figures = out.setdefault(key, [0, 0, 0, 0, 0, 0, defaultdict(set)])
        figures[0] += 1
        timed_out = e.status == "cancelled" and e.error.startswith("timed out")
        for i, hit in enumerate(
            (
                e.status == "completed",
                e.status == "failed",
                timed_out,
                e.status == "cancelled" and not timed_out,
                e.status in ("running", "waiting"),
            ),
            start=1,
        ):
            figures[i] += hit
        for log in e.step_logs.all():
            figures[6][log.step].add(e.pk)
    return {key: (*f[:6], {step: len(ids) for step, ids in f[6].items()}) for key, f in out.items()}


def level_moves_oracle(project_id: int) -> dict[tuple[date, str, str], int]:
    """{(day, from, to): moves} of the project's real members, from the raw history."""
    out: dict = defaultdict(int)
    for change in LevelChange.objects.filter(project_id=project_id, user__is_test=False):
        out[(change.at.date(), change.from_level, change.to_level)] += 1
    return dict(out)
