"""The programme dashboard's figures, read from the daily rollups only.

Each function returns :class:`analytics.tables.Table` objects: the page draws them,
the CSV and the JSON export write the very same rows.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta

from django.db.models import Sum

from analytics.models import CohortWeek, LevelMoveDay, ProjectDay, StepDay, WorkflowDay
from analytics.periods import Period
from analytics.tables import Table

RETENTION_WEEKS = 8


def _days(period: Period) -> list[date]:
    return [period.start + timedelta(days=i) for i in range(period.days)]


def daily_rows(project_id: int, period: Period) -> list[dict]:
    """One dict per day of the period (days without a row read as zero)."""
    base = (
        ProjectDay.objects.filter(project_id=project_id, day__lt=period.start).aggregate(
            owed=Sum("net")
        )["owed"]
        or 0
    )
    rows = {
        row["day"]: row
        for row in ProjectDay.objects.filter(
            project_id=project_id, day__gte=period.start, day__lte=period.end
        ).values()
    }
    last_members, last_phones = (
        ProjectDay.objects.filter(project_id=project_id, day__lt=period.start)
        .order_by("-day")
        .values_list("members_total", "phone_linked")
        .first()
    ) or (0, 0)
    out, owed = [], base
    for day in _days(period):
        row = rows.get(day) or {
            "day": day,
            "members_total": last_members,
            "phone_linked": last_phones,
            "levels": {},
        }
        owed += row.get("net", 0)
        last_members, last_phones = row["members_total"], row.get("phone_linked") or 0
        out.append({**row, "outstanding": owed})
    return out


def _totals(rows: list[dict]) -> dict:
    def total(key: str) -> int:
        return sum(r.get(key, 0) or 0 for r in rows)

    last = rows[-1] if rows else {}
    spent, redemptions = total("spent"), total("redemptions")
    return {
        "Members (end of period)": last.get("members_total", 0),
        "New members": total("members_new"),
        "Active in the last 7 days (end of period)": last.get("active_7d", 0),
        "Active in the last 30 days (end of period)": last.get("active_30d", 0),
        "Phone linked (end of period)": last.get("phone_linked") or 0,
        "Bonuses earned": total("earned"),
        "Bonuses spent": spent,
        "Bonuses expired": total("expired"),
        "Bonuses clawed back": total("clawed_back"),
        "Bonuses added by operators": total("added_by_operator"),
        "Outstanding balance (what the programme owes)": last.get("outstanding", 0),
        "Redemptions": redemptions,
        "Average redemption (bonuses)": round(spent / redemptions, 1) if redemptions else None,
        "Members who joined by invitation": total("referrals_joined"),
        "Members whose invitation was used": total("referrers"),
        "Referral rewards paid": total("referrals_rewarded"),
        "Conversations started": total("executions_started"),
        "Conversations completed": total("executions_completed"),
    }


def _change(now, before) -> str:
    if not isinstance(now, int | float) or not isinstance(before, int | float):
        return "n/a"
    if before == 0:
        return "new" if now else "0 %"
    pct = 100 * (now - before) / abs(before)
    if round(pct) == 0:
        return "no change"
    return f"{'up' if pct > 0 else 'down'} {abs(pct):.0f} %"


def summary_table(project_id: int, period: Period) -> tuple[Table, list[dict]]:
    rows = daily_rows(project_id, period)
    now, before = _totals(rows), _totals(daily_rows(project_id, period.previous))
    table = Table(
        "summary",
        f"The programme, {period.label()}, compared with the {period.days} days before",
        ["Figure", "This period", "Previous period", "Change"],
        [[k, v, before[k], _change(v, before[k])] for k, v in now.items()],
        note="Phone linked: Telegram members who shared their phone in the bot.",
    )
    return table, rows


def daily_table(rows: list[dict]) -> Table:
    return Table(
        "daily",
        "Day by day",
        [
            "Day",
            "New members",
            "Members",
            "Phone linked",
            "Active that day",
            "Earned",
            "Spent",
            "Expired",
            "Clawed back",
            "Outstanding balance",
            "Redemptions",
            "Average redemption",
            "Joined by invitation",
            "Referral rewards",
        ],
        [
            [
                r["day"],
                r.get("members_new", 0),
                r.get("members_total", 0),
                r.get("phone_linked") or 0,
                r.get("active_1d", 0),
                r.get("earned", 0),
                r.get("spent", 0),
                r.get("expired", 0),
                r.get("clawed_back", 0),
                r["outstanding"],
                r.get("redemptions", 0),
                round(r["spent"] / r["redemptions"], 1) if r.get("redemptions") else None,
                r.get("referrals_joined", 0),
                r.get("referrals_rewarded", 0),
            ]
            for r in rows
        ],
        note="Bonuses in points; days are UTC.",
    )


def levels_table(project_id: int, period: Period) -> Table:
    """Members per level at the start and the end of the period (daily snapshots)."""

    def snapshot(on_or_before: date) -> dict:
        levels = (
            ProjectDay.objects.filter(project_id=project_id, day__lte=on_or_before)
            .exclude(levels={})
            .order_by("-day")
            .values_list("levels", flat=True)
            .first()
        )
        return levels or {}

    first, last = snapshot(period.start - timedelta(days=1)), snapshot(period.end)
    names = sorted(set(first) | set(last))
    return Table(
        "levels",
        "Levels: distribution (members per level)",
        ["Level", "Before the period", "End of period", "Change (net)"],
        [[n, first.get(n, 0), last.get(n, 0), last.get(n, 0) - first.get(n, 0)] for n in names],
        note="From the daily level snapshots. The moves behind the change are below.",
    )


def _moves(project_id: int, period: Period) -> dict[tuple[str, str], int]:
    return {
        (row["from_level"], row["to_level"]): row["n"]
        for row in LevelMoveDay.objects.filter(
            project_id=project_id, day__gte=period.start, day__lte=period.end
        )
        .values("from_level", "to_level")
        .annotate(n=Sum("moves"))
    }


def level_moves_table(project_id: int, period: Period) -> Table:
    """Members who moved from one level to another in the period, and the period before."""
    now, before = _moves(project_id, period), _moves(project_id, period.previous)
    pairs = sorted(set(now) | set(before), key=lambda pair: (-now.get(pair, 0), pair))
    return Table(
        "level_moves",
        "Levels: moves (from → to)",
        ["From level", "To level", "Moves this period", "Previous period", "Change"],
        [
            [
                source or "(none)",
                target or "(none)",
                now.get((source, target), 0),
                before.get((source, target), 0),
                _change(now.get((source, target), 0), before.get((source, target), 0)),
            ]
            for source, target in pairs
        ],
        note="One move each time a member reached another level (earning bonuses, or a "
        "till customer merged in); a member may move more than once.",
    )


def level_moves_per_day(project_id: int, period: Period) -> dict:
    """{day: moves} of the period, for the chart."""
    return dict(
        LevelMoveDay.objects.filter(
            project_id=project_id, day__gte=period.start, day__lte=period.end
        )
        .values("day")
        .annotate(n=Sum("moves"))
        .values_list("day", "n")
    )


def retention_table(project_id: int, period: Period) -> Table:
    """Weekly cohorts (members by the week they joined): share active N weeks later."""
    last_week = period.end - timedelta(days=period.end.weekday())
    first_week = last_week - timedelta(weeks=RETENTION_WEEKS - 1)
    active = defaultdict(dict)
    for cohort, week, users in CohortWeek.objects.filter(
        project_id=project_id, cohort_week__gte=first_week, cohort_week__lte=last_week
    ).values_list("cohort_week", "active_week", "users"):
        active[cohort][(week - cohort).days // 7] = users
    joined = defaultdict(int)
    for day, n in ProjectDay.objects.filter(
        project_id=project_id,
        day__gte=first_week,
        day__lte=last_week + timedelta(days=6),
    ).values_list("day", "members_new"):
        joined[day - timedelta(days=day.weekday())] += n
    rows = []
    for i in range(RETENTION_WEEKS):
        cohort = first_week + timedelta(weeks=i)
        size = joined.get(cohort, 0)
        cells = []
        for week in range(RETENTION_WEEKS):
            if cohort + timedelta(weeks=week) > period.end:
                cells.append(None)
            else:
                n = active[cohort].get(week, 0)
                cells.append(round(100 * n / size, 1) if size else 0.0)
        rows.append([cohort, size, *cells])
    return Table(
        "retention",
        "Retention: weekly cohorts",
        ["Joined in week of", "Members", *[f"Week {w} %" for w in range(RETENTION_WEEKS)]],
        rows,
        note="Share of the cohort active (a conversation or a bonus entry) in each week "
        "after joining; n/a: that week has not happened yet.",
    )


def workflows_table(project_id: int, period: Period, names: dict[int, str]) -> Table:
    from django.db.models import Sum as S

    rows = (
        WorkflowDay.objects.filter(
            project_id=project_id, day__gte=period.start, day__lte=period.end
        )
        .values("workflow_id", "version_id")
        .annotate(
            started=S("started"),
            completed=S("completed"),
            failed=S("failed"),
            timed_out=S("timed_out"),
            interrupted=S("interrupted"),
            open=S("in_progress"),
        )
        .order_by("-started")
    )
    return Table(
        "workflows",
        "Workflows: conversations started in the period",
        [
            "Workflow",
            "Version id",
            "Started",
            "Completed",
            "Failed",
            "Timed out",
            "Interrupted",
            "Still open",
            "Completed %",
        ],
        [
            [
                names.get(r["workflow_id"], f"#{r['workflow_id']}"),
                r["version_id"],
                r["started"],
                r["completed"],
                r["failed"],
                r["timed_out"],
                r["interrupted"],
                r["open"],
                round(100 * r["completed"] / r["started"], 1) if r["started"] else 0.0,
            ]
            for r in rows
        ],
    )


def busiest_workflow(project_id: int, period: Period) -> int | None:
    """The workflow with the most conversations started in the period."""
    return (
        WorkflowDay.objects.filter(
            project_id=project_id, day__gte=period.start, day__lte=period.end
        )
        .values("workflow_id")
        .annotate(n=Sum("started"))
        .order_by("-n")
        .values_list("workflow_id", flat=True)
        .first()
    )


def funnel(
    project_id: int, workflow_id: int, version_id: int | None, period: Period, order: list[str]
) -> tuple[Table, dict[str, int], int]:
    """Steps reached by conversations started in the period, with drop-off."""
    days = {"project_id": project_id, "workflow_id": workflow_id}
    days.update(day__gte=period.start, day__lte=period.end)
    if version_id is not None:
        days["version_id"] = version_id
    outcome = WorkflowDay.objects.filter(**days).aggregate(
        started=Sum("started"),
        completed=Sum("completed"),
        failed=Sum("failed"),
        timed_out=Sum("timed_out"),
        interrupted=Sum("interrupted"),
        open=Sum("in_progress"),
    )
    started = outcome["started"] or 0
    reached = dict(
        StepDay.objects.filter(**days)
        .values("step")
        .annotate(n=Sum("reached"))
        .values_list("step", "n")
    )
    steps = [s for s in order if s in reached] + sorted(s for s in reached if s not in order)
    rows, previous = [["(started)", started, 100.0 if started else 0.0, None]], started
    for step in steps:
        n = reached[step]
        share = round(100 * n / started, 1) if started else 0.0
        drop = round(100 * (previous - n) / previous, 1) if previous and n <= previous else None
        rows.append([step, n, share, drop])
        previous = n
    for label, key in (
        ("(completed)", "completed"),
        ("(failed)", "failed"),
        ("(timed out)", "timed_out"),
        ("(interrupted)", "interrupted"),
        ("(still open)", "open"),
    ):
        n = outcome[key] or 0
        rows.append([label, n, round(100 * n / started, 1) if started else 0.0, None])
    table = Table(
        "funnel",
        "Funnel: conversations started in the period, by the steps they reached",
        ["Step", "Conversations", "% of started", "Drop-off from the step before %"],
        rows,
        note="Steps in the order of the flow (steps no conversation reached are left "
        "out); on a branching flow the step before is the row above, so read drop-off "
        "along one path. Timed out: no answer before the wait's timeout.",
    )
    return table, reached, started
