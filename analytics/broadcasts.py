"""Broadcast results: delivered, blocked, failed, button presses, and who came back.

Presses and "came back" read the broadcast's rollup row (``BroadcastResult``, kept
by ``analytics.broadcast_results``): a recipient came back when they were active (a
conversation or a bonus entry) after their message was delivered and within N days
of the send, the same day included; presses are callback queries on the broadcast's
own messages (``analytics.presses``). A conversion to one chosen workflow reads that
workflow's executions of the broadcast's recipients only (bounded by the broadcast's
size).
"""

from __future__ import annotations

from datetime import timedelta

from analytics.broadcast_results import RETURN_DAYS, came_back_within
from analytics.models import BroadcastResult
from analytics.periods import Period
from analytics.tables import Table
from workflows.models import Broadcast, BroadcastDelivery, WorkflowExecution

MAX_DAYS = RETURN_DAYS


def _pct(part: int, whole: int) -> float:
    return round(100 * part / whole, 1) if whole else 0.0


def came_back_count(broadcast: Broadcast, *, days: int) -> int:
    """Recipients active after their delivery, up to ``days`` days after the send day
    (from the rollup: ``analytics.broadcast_results``)."""
    return came_back_within(BroadcastResult.objects.filter(broadcast_id=broadcast.pk).first(), days)


def broadcasts_table(
    project_id: int, period: Period, *, days: int = 7, workflow_id: int | None = None
) -> Table:
    days = min(max(days, 1), MAX_DAYS)
    # The delivery figures are the broadcast's own counters (recounted from its
    # delivery rows after every batch: workflows.broadcasts.broadcast_counters_refresh).
    broadcasts = list(
        Broadcast.objects.filter(
            project_id=project_id,
            started_at__date__gte=period.start,
            started_at__date__lte=period.end,
        ).order_by("-started_at")[:50]
    )
    results = {
        r.broadcast_id: r
        for r in BroadcastResult.objects.filter(broadcast_id__in=[b.pk for b in broadcasts])
    }
    rows = []
    for b in broadcasts:
        result = results.get(b.pk)
        came_back = came_back_within(result, days)
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
        delivered = b.sent
        pressed, members_pressed = (result.presses, result.members_pressed) if result else (0, 0)
        rows.append(
            [
                b.title,
                b.started_at.date(),
                b.total,
                delivered,
                b.blocked,
                b.failed,
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
