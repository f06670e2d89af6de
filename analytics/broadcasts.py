"""Broadcast results: delivered, blocked, failed, and who came back afterwards.

"Came back" reads the daily activity rollup (a conversation or a bonus entry within
N days after the send). A conversion to one chosen workflow reads that workflow's
executions of the broadcast's recipients only (bounded by the broadcast's size).
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, Q

from analytics.models import UserDay
from analytics.periods import Period
from analytics.tables import Table
from workflows.models import Broadcast, BroadcastDelivery, WorkflowExecution

MAX_DAYS = 90


def broadcasts_table(
    project_id: int, period: Period, *, days: int = 7, workflow_id: int | None = None
) -> Table:
    days = min(max(days, 1), MAX_DAYS)
    broadcasts = (
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
    rows = []
    for b in broadcasts:
        recipients = BroadcastDelivery.objects.filter(broadcast=b, status="sent").values("user_id")
        sent_day = b.started_at.date()
        came_back = (
            UserDay.objects.filter(
                project_id=project_id,
                user_id__in=recipients,
                day__gt=sent_day,
                day__lte=sent_day + timedelta(days=days),
            )
            .values("user_id")
            .distinct()
            .count()
        )
        converted = None
        if workflow_id is not None:
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
        rows.append(
            [
                b.title,
                b.started_at.date(),
                b.n_total,
                delivered,
                b.n_blocked,
                b.n_failed,
                None,  # button presses are not recorded per broadcast yet
                came_back,
                round(100 * came_back / delivered, 1) if delivered else 0.0,
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
            f"Came back within {days} days",
            "Came back %",
            "Started the chosen workflow",
        ],
        rows,
        note="Came back: a conversation or a bonus entry after the day of the send. "
        "Button presses: n/a (not recorded per broadcast yet). Choose a workflow to "
        "count who started it after the send.",
    )
