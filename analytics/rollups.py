"""Keeping the daily rollups: which days to recompute, and recomputing them.

A day is recomputed whole, in one transaction per run of consecutive days: its rows
are deleted and written again from the raw data, so running it twice gives the same
rows. Each run recomputes today and yesterday, plus every older day a source touched
since the previous run (``RollupState`` keeps how far each source was read): a
conversation that ended late, a ledger entry, a level move or a step log written for
an older day. Each run also reads the new button presses on broadcast messages
(``analytics.presses``).
A late activity also changes the 7- and 30-day active counts of the 29 days after it,
so those are recomputed too.

Days are UTC days (``TIME_ZONE = "UTC"``). Test users (the simulator's) are left out.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta

from django.db import connection, transaction
from django.db.models import Count, Max, Min, Q, Sum
from django.db.models.functions import TruncDate, TruncWeek
from django.utils import timezone

from analytics.broadcast_results import broadcast_results_write, broadcasts_in_window
from analytics.level_moves import level_moves_dirty, level_moves_first, level_moves_write
from analytics.models import (
    BroadcastPress,
    CohortWeek,
    ProjectDay,
    RollupState,
    StepDay,
    UserDay,
    WorkflowDay,
)
from analytics.presses import presses_collect
from botplatform.locks import ROLLUP_LOCK, LockNotAcquired, advisory_lock
from users.models import BonusTransaction, BotUser, LevelChange
from workflows.models import ExecutionStepLog, WorkflowExecution

logger = logging.getLogger(__name__)

RECENT_DAYS = 2  # today and yesterday, every run
ACTIVE_WINDOW = 30
CHUNK_DAYS = 31
FINISH_MARGIN = timedelta(minutes=10)  # commits that land after their timestamp
TIMED_OUT_PREFIX = "timed out"
Kind = BonusTransaction.Kind


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def week_of(day: date) -> date:
    return day - timedelta(days=day.weekday())


def runs_of(days: Iterable[date]) -> list[tuple[date, date]]:
    """Consecutive days grouped into (first, last) runs, oldest first."""
    runs: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if runs and day == runs[-1][1] + timedelta(days=1):
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def _dates(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


# --- The raw figures of a run of days ------------------------------------------------


def _ledger(t0: datetime, t1: datetime) -> dict:
    rows = (
        BonusTransaction.objects.filter(created_at__gte=t0, created_at__lt=t1)
        .exclude(user__is_test=True)
        .annotate(day=TruncDate("created_at"))
        .values("project_id", "day", "kind")
        .annotate(
            plus=Sum("amount", filter=Q(amount__gt=0)),
            minus=Sum("amount", filter=Q(amount__lt=0)),
            count=Count("id"),
        )
    )
    out: dict = defaultdict(lambda: defaultdict(int))
    for row in rows:
        figures = out[(row["project_id"], row["day"])]
        plus, minus = row["plus"] or 0, -(row["minus"] or 0)
        kind = row["kind"]
        figures["net"] += plus - minus
        if kind in (Kind.EARN, Kind.REFERRAL):
            figures["earned"] += plus
        if kind == Kind.REFERRAL:
            figures["referrals_rewarded"] += row["count"]
        if kind == Kind.SPEND:
            figures["spent"] += minus
            figures["redemptions"] += row["count"]
        if kind == Kind.EXPIRY:
            figures["expired"] += minus
        if kind == Kind.ADJUST:
            figures["clawed_back"] += minus
            figures["added_by_operator"] += plus
    return out


def _members(t0: datetime, t1: datetime) -> tuple[dict, dict]:
    real = BotUser.objects.filter(is_test=False)
    before = dict(
        real.filter(first_seen_at__lt=t0)
        .values("project_id")
        .annotate(n=Count("id"))
        .values_list("project_id", "n")
    )
    new: dict = defaultdict(lambda: defaultdict(int))
    rows = (
        real.filter(first_seen_at__gte=t0, first_seen_at__lt=t1)
        .annotate(day=TruncDate("first_seen_at"))
        .values("project_id", "day")
        .annotate(
            n=Count("id"),
            referred=Count("id", filter=Q(referrer__isnull=False)),
            referrers=Count("referrer", distinct=True),
        )
    )
    for row in rows:
        figures = new[(row["project_id"], row["day"])]
        figures["members_new"] = row["n"]
        figures["referrals_joined"] = row["referred"]
        figures["referrers"] = row["referrers"]
    return before, new


def _executions(t0: datetime, t1: datetime) -> list[dict]:
    return list(
        WorkflowExecution.objects.filter(started_at__gte=t0, started_at__lt=t1)
        .exclude(user__is_test=True)
        .annotate(day=TruncDate("started_at"))
        .values("project_id", "workflow_id", "version_id", "day")
        .annotate(
            started=Count("id"),
            completed=Count("id", filter=Q(status="completed")),
            failed=Count("id", filter=Q(status="failed")),
            timed_out=Count("id", filter=Q(status="cancelled", error__startswith=TIMED_OUT_PREFIX)),
            cancelled=Count("id", filter=Q(status="cancelled")),
            open=Count("id", filter=Q(status__in=["running", "waiting"])),
        )
    )


def _steps(t0: datetime, t1: datetime) -> list[dict]:
    return list(
        ExecutionStepLog.objects.filter(execution__started_at__gte=t0, execution__started_at__lt=t1)
        .exclude(execution__user__is_test=True)
        .annotate(day=TruncDate("execution__started_at"))
        .values(
            "execution__project_id",
            "execution__workflow_id",
            "execution__version_id",
            "day",
            "step",
        )
        .annotate(reached=Count("execution_id", distinct=True))
    )


def _active_users(t0: datetime, t1: datetime) -> dict[tuple[int, int, date], datetime]:
    """(project, user, day) of every activity in the run (conversations and ledger),
    with the time of the member's last activity that day."""
    seen: dict[tuple[int, int, date], datetime] = {}
    for model, field in ((WorkflowExecution, "started_at"), (BonusTransaction, "created_at")):
        rows = (
            model.objects.filter(**{f"{field}__gte": t0, f"{field}__lt": t1})
            .exclude(user__is_test=True)
            .annotate(day=TruncDate(field))
            .values("project_id", "user_id", "day")
            .annotate(last=Max(field))
            .values_list("project_id", "user_id", "day", "last")
        )
        for project, user, day, last in rows:
            key = (project, user, day)
            if key not in seen or seen[key] < last:
                seen[key] = last
    return seen


# --- Writing a run of days -----------------------------------------------------------


def _write_user_days(first: date, last: date) -> None:
    t0, t1 = day_start(first), day_start(last + timedelta(days=1))
    UserDay.objects.filter(day__gte=first, day__lte=last).delete()
    if _insert_select():
        _insert_user_days_sql(t0, t1)
        return
    active = _active_users(t0, t1)
    joined = dict(
        BotUser.objects.filter(pk__in={user for _p, user, _d in active}).values_list(
            "pk", "first_seen_at"
        )
    )
    UserDay.objects.bulk_create(
        [
            UserDay(
                project_id=project,
                user_id=user,
                day=day,
                cohort_week=week_of(_day_of(joined[user])),
                last_at=last,
            )
            for (project, user, day), last in sorted(active.items())
            if user in joined
        ],
        batch_size=5000,
    )


def _insert_select() -> bool:
    """PostgreSQL writes the user days in one statement; other databases through the ORM."""
    return connection.vendor == "postgresql"


def _insert_user_days_sql(t0: datetime, t1: datetime) -> None:
    """The same rows as the ORM path, in one INSERT … SELECT (a rebuild's bulk)."""
    names = {
        "userday": UserDay._meta.db_table,
        "execution": WorkflowExecution._meta.db_table,
        "ledger": BonusTransaction._meta.db_table,
        "member": BotUser._meta.db_table,
    }
    sql = (  # noqa: S608 - table names from the models, values as parameters
        "INSERT INTO {userday} (project_id, user_id, day, cohort_week, last_at) "
        "SELECT a.project_id, a.user_id, a.day, "
        "date_trunc('week', m.first_seen_at AT TIME ZONE 'UTC')::date, max(a.at) "
        "FROM (SELECT project_id, user_id, (started_at AT TIME ZONE 'UTC')::date AS day, "
        "started_at AS at FROM {execution} WHERE started_at >= %s AND started_at < %s "
        "UNION ALL SELECT project_id, user_id, (created_at AT TIME ZONE 'UTC')::date, "
        "created_at FROM {ledger} WHERE created_at >= %s AND created_at < %s) a "
        "JOIN {member} m ON m.id = a.user_id AND NOT m.is_test "
        "GROUP BY a.project_id, a.user_id, a.day, m.first_seen_at"
    ).format(**names)
    with connection.cursor() as cursor:
        cursor.execute(sql, [t0, t1, t0, t1])


def _write_cohort_weeks(first: date, last: date) -> None:
    """Recompute the retention rows of every week that [first, last] touches."""
    first_week, last_week = week_of(first), week_of(last)
    rows = (
        UserDay.objects.filter(day__gte=first_week, day__lt=last_week + timedelta(days=7))
        .annotate(active_week=TruncWeek("day"))
        .values("project_id", "cohort_week", "active_week")
        .annotate(users=Count("user_id", distinct=True))
    )
    CohortWeek.objects.filter(active_week__gte=first_week, active_week__lte=last_week).delete()
    CohortWeek.objects.bulk_create(
        [
            CohortWeek(
                project_id=row["project_id"],
                cohort_week=row["cohort_week"],
                active_week=row["active_week"]
                if isinstance(row["active_week"], date)
                and not isinstance(row["active_week"], datetime)
                else _day_of(row["active_week"]),
                users=row["users"],
            )
            for row in rows
        ],
        batch_size=5000,
    )


def _active_counts(first: date, last: date) -> dict:
    """{(project, day): (1-day, 7-day, 30-day active)} from UserDay."""
    out = {}
    for day in _dates(first, last):
        rows = (
            UserDay.objects.filter(day__gt=day - timedelta(days=ACTIVE_WINDOW), day__lte=day)
            .values("project_id")
            .annotate(
                d1=Count("user_id", distinct=True, filter=Q(day=day)),
                d7=Count("user_id", distinct=True, filter=Q(day__gt=day - timedelta(days=7))),
                d30=Count("user_id", distinct=True),
            )
        )
        for row in rows:
            out[(row["project_id"], day)] = (row["d1"], row["d7"], row["d30"])
    return out


def _levels_now(project_ids: set[int]) -> dict[int, dict]:
    """Members per level now: levels have no history before ``LevelChange``, so the
    distribution is a snapshot kept in today's row."""
    levels: dict[int, dict] = defaultdict(dict)
    for project_id, level, n in (
        BotUser.objects.filter(is_test=False, project_id__in=project_ids)
        .values("project_id", "level")
        .annotate(n=Count("id"))
        .values_list("project_id", "level", "n")
    ):
        levels[project_id][level or "(none)"] = n
    return {p: levels.get(p, {}) for p in project_ids}


def _phones(t0: datetime, t1: datetime) -> tuple[dict, dict]:
    """Telegram members with a shared phone: per project before ``t0``, and per
    (project, day) linked in [t0, t1), from ``BotUser.phone_linked_at``."""
    linked = BotUser.objects.filter(
        is_test=False, telegram_id__isnull=False, phone_linked_at__isnull=False
    ).exclude(phone="")
    before = dict(
        linked.filter(phone_linked_at__lt=t0)
        .values("project_id")
        .annotate(n=Count("id"))
        .values_list("project_id", "n")
    )
    per_day = {
        (project_id, day): n
        for project_id, day, n in linked.filter(phone_linked_at__gte=t0, phone_linked_at__lt=t1)
        .annotate(day=TruncDate("phone_linked_at"))
        .values("project_id", "day")
        .annotate(n=Count("id"))
        .values_list("project_id", "day", "n")
    }
    return before, per_day


def _write_project_days(first: date, last: date, *, today: date) -> None:
    t0, t1 = day_start(first), day_start(last + timedelta(days=1))
    ledger = _ledger(t0, t1)
    before, new = _members(t0, t1)
    executions = _executions(t0, t1)
    totals: dict = defaultdict(lambda: defaultdict(int))
    for row in executions:
        figures = totals[(row["project_id"], row["day"])]
        figures["executions_started"] += row["started"]
        figures["executions_completed"] += row["completed"]
        figures["executions_failed"] += row["failed"]
    active = _active_counts(first, last)
    project_ids = set(before) | {p for p, _d in (*ledger, *new, *totals, *active)}
    phones_before, phones_new = _phones(t0, t1)
    project_ids |= set(phones_before) | {p for p, _d in phones_new}
    kept = {
        (row.project_id, row.day): row.levels
        for row in ProjectDay.objects.filter(day__gte=first, day__lte=last)
    }
    snapshot = _levels_now(project_ids) if first <= today <= last else {}
    rows = []
    for project_id in sorted(project_ids):
        members = before.get(project_id, 0)
        phones = phones_before.get(project_id, 0)
        for day in _dates(first, last):
            key = (project_id, day)
            figures = {**ledger.get(key, {}), **new.get(key, {}), **totals.get(key, {})}
            members += figures.get("members_new", 0)
            phones += phones_new.get(key, 0)
            if members == 0 and not figures:
                continue  # the project had nothing yet
            d1, d7, d30 = active.get(key, (0, 0, 0))
            levels = snapshot[project_id] if day == today else kept.get(key, {})
            rows.append(
                ProjectDay(
                    project_id=project_id,
                    day=day,
                    members_total=members,
                    active_1d=d1,
                    active_7d=d7,
                    active_30d=d30,
                    levels=levels,
                    phone_linked=phones,
                    **figures,
                )
            )
    ProjectDay.objects.filter(day__gte=first, day__lte=last).delete()
    ProjectDay.objects.bulk_create(rows, batch_size=2000)


def _write_workflow_days(first: date, last: date) -> None:
    t0, t1 = day_start(first), day_start(last + timedelta(days=1))
    WorkflowDay.objects.filter(day__gte=first, day__lte=last).delete()
    WorkflowDay.objects.bulk_create(
        [
            WorkflowDay(
                project_id=row["project_id"],
                workflow_id=row["workflow_id"],
                version_id=row["version_id"],
                day=row["day"],
                started=row["started"],
                completed=row["completed"],
                failed=row["failed"],
                timed_out=row["timed_out"],
                interrupted=row["cancelled"] - row["timed_out"],
                in_progress=row["open"],
            )
            for row in _executions(t0, t1)
        ],
        batch_size=5000,
    )
    StepDay.objects.filter(day__gte=first, day__lte=last).delete()
    StepDay.objects.bulk_create(
        [
            StepDay(
                project_id=row["execution__project_id"],
                workflow_id=row["execution__workflow_id"],
                version_id=row["execution__version_id"],
                day=row["day"],
                step=row["step"],
                reached=row["reached"],
            )
            for row in _steps(t0, t1)
        ],
        batch_size=5000,
    )


def rollup_days(
    days: Iterable[date], *, today: date | None = None, broadcasts: Iterable[int] = ()
) -> int:
    """Recompute these days (every project), and the results of the broadcasts whose
    window holds one of them (plus ``broadcasts``: new presses); returns how many days
    were written."""
    today = today or timezone.now().date()
    days = {day for day in days if day <= today}
    for first, last in runs_of(days):
        # Long runs (a rebuild) in chunks: one chunk's raw rows fit in memory.
        chunk_first = first
        while chunk_first <= last:
            chunk_last = min(chunk_first + timedelta(days=CHUNK_DAYS - 1), last)
            with transaction.atomic():
                _write_user_days(chunk_first, chunk_last)
                _write_cohort_weeks(chunk_first, chunk_last)
                _write_workflow_days(chunk_first, chunk_last)
                level_moves_write(
                    chunk_first,
                    chunk_last,
                    t0=day_start(chunk_first),
                    t1=day_start(chunk_last + timedelta(days=1)),
                )
            chunk_first = chunk_last + timedelta(days=1)
        # The active counts read the user days of the 29 days before: a late activity
        # changed the days after it too.
        until = min(last + timedelta(days=ACTIVE_WINDOW - 1), today)
        with transaction.atomic():
            _write_project_days(first, until, today=today)
    with transaction.atomic():
        broadcast_results_write(broadcasts_in_window(days) | set(broadcasts))
    return len(days)


# --- What changed since the last run -------------------------------------------------


def _day_of(moment: datetime) -> date:
    return timezone.localtime(moment, UTC).date()


def dirty_days(state: RollupState, *, now: datetime) -> tuple[set[date], dict]:
    """Days touched since ``state``, and the new watermarks."""
    days: set[date] = set()
    marks: dict = {}
    ledger = BonusTransaction.objects.filter(id__gt=state.ledger_id)
    top = ledger.aggregate(top=Max("id"))["top"]
    if top:
        days.update(
            ledger.annotate(d=TruncDate("created_at")).values_list("d", flat=True).distinct()
        )
        marks["ledger_id"] = top
    members = BotUser.objects.filter(id__gt=state.member_id)
    top = members.aggregate(top=Max("id"))["top"]
    if top:
        days.update(
            members.annotate(d=TruncDate("first_seen_at")).values_list("d", flat=True).distinct()
        )
        marks["member_id"] = top
    logs = ExecutionStepLog.objects.filter(id__gt=state.step_log_id)
    top = logs.aggregate(top=Max("id"))["top"]
    if top:
        days.update(
            logs.annotate(d=TruncDate("execution__started_at"))
            .values_list("d", flat=True)
            .distinct()
        )
        marks["step_log_id"] = top
    since = state.executions_changed_at
    finished = WorkflowExecution.objects.all()
    if since is not None:
        finished = finished.filter(finished_at__gte=since - FINISH_MARGIN)
    first = finished.aggregate(first=Min("started_at"))["first"]
    if first is not None:
        days.update(
            finished.annotate(d=TruncDate("started_at")).values_list("d", flat=True).distinct()
        )
    marks["executions_changed_at"] = now
    moved, mark = level_moves_dirty(state)
    days.update(moved)
    marks.update(mark)
    return {d for d in days if d is not None}, marks


def rollup_run(*, now: datetime | None = None) -> dict:
    """The periodic entry: recompute recent and touched days, move the watermarks.

    One run at a time (an advisory lock on PostgreSQL); a second one skips.
    """
    try:
        with advisory_lock(ROLLUP_LOCK):
            return _rollup_run(now=now)
    except LockNotAcquired:
        return {"days": 0, "late_days": [], "skipped": "another rollup is running"}


def _rollup_run(*, now: datetime | None) -> dict:
    now = now or timezone.now()
    today = _day_of(now)
    state, _ = RollupState.objects.get_or_create(name="default")
    touched, marks = dirty_days(state, now=now)
    recent = {today - timedelta(days=i) for i in range(RECENT_DAYS)}
    days = recent | touched
    marks["update_id"], pressed = presses_collect(since_id=state.update_id, now=now)
    written = rollup_days(days, today=today, broadcasts=pressed)
    RollupState.objects.filter(pk=state.pk).update(last_run_at=now, **marks)
    late = sorted(d for d in touched if d not in recent)
    if late:
        logger.info("Rollup: recomputed %d older day(s) with late data: %s", len(late), late[:5])
    return {"days": written, "late_days": [d.isoformat() for d in late]}


def rollup_rebuild(*, since: date | None = None, now: datetime | None = None) -> int:
    """Recompute every day from the first raw row (or ``since``) to today."""
    now = now or timezone.now()
    today = _day_of(now)
    if since is None:
        firsts = [
            BotUser.objects.aggregate(m=Min("first_seen_at"))["m"],
            BonusTransaction.objects.aggregate(m=Min("created_at"))["m"],
            WorkflowExecution.objects.aggregate(m=Min("started_at"))["m"],
        ]
        present = [_day_of(m) for m in firsts if m is not None]
        present += [d for d in (level_moves_first(),) if d is not None]
        since = min(present, default=today)
    RollupState.objects.update_or_create(
        name="default",
        defaults={
            "ledger_id": BonusTransaction.objects.aggregate(m=Max("id"))["m"] or 0,
            "member_id": BotUser.objects.aggregate(m=Max("id"))["m"] or 0,
            "step_log_id": ExecutionStepLog.objects.aggregate(m=Max("id"))["m"] or 0,
            "level_change_id": LevelChange.objects.aggregate(m=Max("id"))["m"] or 0,
            "executions_changed_at": now,
            "last_run_at": now,
        },
    )
    # The presses still in the journal are read again (the rows kept stay: unique).
    update_id, _pressed = presses_collect(since_id=0, now=now)
    RollupState.objects.filter(name="default").update(update_id=update_id)
    return rollup_days(
        _dates(since, today),
        today=today,
        broadcasts=BroadcastPress.objects.values_list("broadcast_id", flat=True).distinct(),
    )
