"""The broadcast results rollup (``BroadcastResult``): one row per broadcast.

What the broadcast results page shows besides the broadcast's own delivery counters:

- **presses** and **members who pressed**, from ``BroadcastPress``;
- **who came back**, as a histogram: for each recipient whose message was delivered,
  the first day (0 = the day of the send) on which they were active *after* their
  delivery finished (``UserDay.last_at`` > ``BroadcastDelivery.finished_at``), up to
  ``RETURN_DAYS`` days; "came back within N days" is the sum of days 0..N.

A broadcast is recomputed whole (so a re-run gives the same row) whenever the rollup
recomputes a day in its window (the send day and the ``RETURN_DAYS`` after it: a late
activity is corrected like any other), or a press on it was read.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

from django.db import connection
from django.db.models import Count

from analytics.models import BroadcastPress, BroadcastResult, UserDay
from workflows.models import Broadcast, BroadcastDelivery

RETURN_DAYS = 90  # the longest "came back within N days" the page offers

_FIRST_RETURNS = """
SELECT f.first_day, count(*) FROM (
    SELECT d.user_id, min(u.day) AS first_day
    FROM {delivery} d
    JOIN {userday} u ON u.project_id = %s AND u.user_id = d.user_id
        AND u.day >= %s AND u.day <= %s
    WHERE d.broadcast_id = %s AND d.status = 'sent'
        AND (u.last_at > COALESCE(d.finished_at, %s) OR (u.last_at IS NULL AND u.day > %s))
    GROUP BY d.user_id
) f GROUP BY f.first_day
"""


def broadcasts_in_window(days: Iterable[date]) -> set[int]:
    """Broadcasts whose return window holds one of ``days``."""
    days = list(days)
    if not days:
        return set()
    return set(
        Broadcast.objects.filter(
            started_at__date__gte=min(days) - timedelta(days=RETURN_DAYS),
            started_at__date__lte=max(days),
        ).values_list("pk", flat=True)
    )


def _returns(broadcast: Broadcast) -> dict[str, int]:
    """{days after the send day: recipients who first came back that day}."""
    sent_day = broadcast.started_at.date()
    ops = connection.ops
    sql = _FIRST_RETURNS.format(
        delivery=ops.quote_name(BroadcastDelivery._meta.db_table),
        userday=ops.quote_name(UserDay._meta.db_table),
    )
    params = [
        broadcast.project_id,
        ops.adapt_datefield_value(sent_day),
        ops.adapt_datefield_value(sent_day + timedelta(days=RETURN_DAYS)),
        broadcast.pk,
        ops.adapt_datetimefield_value(broadcast.started_at),
        ops.adapt_datefield_value(sent_day),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    out: dict[str, int] = {}
    for first_day, members in rows:
        if isinstance(first_day, str):  # SQLite answers text
            first_day = date.fromisoformat(first_day)
        out[str((first_day - sent_day).days)] = members
    return out


def broadcast_results_write(broadcast_ids: Iterable[int]) -> int:
    """Recompute the result rows of these broadcasts (those that were sent)."""
    broadcasts = list(Broadcast.objects.filter(pk__in=set(broadcast_ids), started_at__isnull=False))
    if not broadcasts:
        return 0
    presses = {
        row["broadcast_id"]: (row["presses"], row["members"])
        for row in BroadcastPress.objects.filter(broadcast_id__in=[b.pk for b in broadcasts])
        .values("broadcast_id")
        .annotate(presses=Count("id"), members=Count("user_id", distinct=True))
    }
    rows = []
    for broadcast in broadcasts:
        pressed, members = presses.get(broadcast.pk, (0, 0))
        rows.append(
            BroadcastResult(
                broadcast_id=broadcast.pk,
                project_id=broadcast.project_id,
                presses=pressed,
                members_pressed=members,
                returned=_returns(broadcast),
            )
        )
    BroadcastResult.objects.filter(broadcast_id__in=[b.pk for b in broadcasts]).delete()
    BroadcastResult.objects.bulk_create(rows)
    return len(rows)


def came_back_within(result: BroadcastResult | None, days: int) -> int:
    """Recipients who came back on the send day (after their delivery) or the ``days``
    days after it."""
    if result is None:
        return 0
    return sum(n for offset, n in (result.returned or {}).items() if int(offset) <= days)
