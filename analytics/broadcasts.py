"""Broadcast results: delivered, blocked, failed, button presses, and who came back.

"Came back" reads the daily activity rollup (``UserDay``: a conversation or a bonus
entry): a recipient came back when they were active after their message was
delivered and within N days of the send, the same day included (``UserDay.last_at``,
their last activity of the day, later than the delivery's ``finished_at``). Button
presses read ``BroadcastPress`` (callback queries on the broadcast's own messages,
``analytics.presses``). A conversion to one chosen workflow reads that workflow's
executions of the broadcast's recipients only (bounded by the broadcast's size).
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, Exists, OuterRef, Q

from analytics.models import BroadcastPress, UserDay
from analytics.periods import Period
from analytics.tables import Table
from workflows.models import Broadcast, BroadcastDelivery, WorkflowExecution

MAX_DAYS = 90


def _pct(part: int, whole: int) -> float:
    return round(100 * part / whole, 1) if whole else 0.0


def came_back_count(broadcast: Broadcast, *, days: int) -> int:
    """Recipients active after their delivery, up to ``days`` days after the send day.

    Rows written before ``last_at`` existed count from the day after the send (the
    old rule) until a rebuild (``manage.py rollup --rebuild``) fills the time in.
    """
    sent_day = broadcast.started_at.date()
    last_day = sent_day + timedelta(days=days)
    activity = UserDay.objects.filter(
        project_id=broadcast.project_id,
        user_id=OuterRef("user_id"),
        day__gte=sent_day,
        day__lte=last_day,
    ).filter(Q(last_at__gt=OuterRef("finished_at")) | Q(last_at__isnull=True, day__gt=sent_day))
    return (
        BroadcastDelivery.objects.filter(broadcast=broadcast, status="sent")
        .filter(Exists(activity))
        .count()
    )


def broadcasts_table(
    project_id: int, period: Period, *, days: int = 7, workflow_id: int | None = None
) -> Table:
    days = min(max(days, 1), MAX_DAYS)
    broadcasts = list(
        Broadcast.objects.filter(
            project_id=project_id,
            started_at__date__gte=period.start,
            started_at__date__lte=period.end,
        )
        .order_by("-started_at")
        .annotate(
            n_sent=Count("deliveries", filter=Q(deliveries__status="sent")),
            n_blocked=Count("deliveries", filter=Q(deliveries__status="blocked")),
            n_failed=Count("deliveries", filter=Q(deliveries__status="failed")),
            n_total=Count("deliveries"),
        )[:50]
    )
    presses = {
        row["broadcast_id"]: (row["presses"], row["members"])
        for row in BroadcastPress.objects.filter(
            project_id=project_id, broadcast_id__in=[b.pk for b in broadcasts]
        )
        .values("broadcast_id")
        .annotate(presses=Count("id"), members=Count("user_id", distinct=True))
    }
    rows = []
    for b in broadcasts:
        came_back = came_back_count(b, days=days)
        converted = None
        if workflow_id is not None:
            recipients = BroadcastDelivery.objects.filter(broadcast=b, status="sent").values(
                "user_id"
            )
            converted = (
                WorkflowExecution.objects.filter(
                    project_id=project_id,
                    workflow_id=workflow_id,
                    user_id__in=recipients,
                    started_at__gte=b.started_at,
                    started_at__lt=b.started_at + timedelta(days=days),
                )
                .values("user_id")
                .distinct()
                .count()
            )
        delivered = b.n_sent
        pressed, members_pressed = presses.get(b.pk, (0, 0))
        rows.append(
            [
                b.title,
                b.started_at.date(),
                b.n_total,
                delivered,
                b.n_blocked,
                b.n_failed,
                pressed,
                members_pressed,
                _pct(members_pressed, delivered),
                came_back,
                _pct(came_back, delivered),
                converted,
            ]
        )
    return Table(
        "broadcasts",
        f"Broadcasts sent in the period: results within {days} days",
        [
            "Broadcast",
            "Sent on",
            "Recipients",
            "Delivered",
            "Blocked the bot",
            "Failed",
            "Button presses",
            "Members who pressed",
            "Pressed % of delivered",
            f"Came back within {days} days",
            "Came back %",
            "Started the chosen workflow",
        ],
        rows,
        note="Button presses: presses of the broadcast message's own buttons (link "
        "buttons are not reported by Telegram). Came back: a conversation or a bonus "
        "entry after the message was delivered, the same day included. Choose a "
        "workflow to count who started it after the send.",
    )
