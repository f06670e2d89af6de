"""The workflows app's figures on ``/metrics``, handed to the metrics module.

``botplatform.metrics`` is infrastructure and imports no application; this module
registers the execution counts with it when the app is ready (``WorkflowsConfig``).
"""

from __future__ import annotations

from django.db.models import Count

from botplatform import metrics
from workflows.models import WorkflowExecution

EXECUTION_STATUSES = ("running", "waiting")


def execution_counts_by_status() -> dict[tuple[str, ...], float]:
    """Executions still going, by status: ``{("running",): n, ("waiting",): n}``."""
    rows = (
        WorkflowExecution.objects.filter(status__in=EXECUTION_STATUSES)
        .values("status")
        .annotate(n=Count("id"))
    )
    counts = {row["status"]: row["n"] for row in rows}
    return {(status,): counts.get(status, 0) for status in EXECUTION_STATUSES}


def gauges_register() -> None:
    metrics.gauge_register(
        "bp_executions",
        documentation="Workflow executions by status (running, waiting).",
        labels=("status",),
        read=execution_counts_by_status,
    )
