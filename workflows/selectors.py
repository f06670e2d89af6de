"""Reads for the operators' admin: versions, conversations in flight, diffs."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Q

from workflows.models import Workflow, WorkflowExecution, WorkflowVersion
from workflows.splits import split_reach
from workflows.version_diff import VersionDiff, version_diff

IN_FLIGHT = (WorkflowExecution.Status.WAITING, WorkflowExecution.Status.RUNNING)


@dataclass(frozen=True)
class InFlight:
    """Conversations not finished yet, on the live version and on older ones."""

    live: int = 0
    live_waiting: int = 0  # of ``live``: waiting for the user's answer
    older: int = 0


def in_flight_get(*, workflow: Workflow) -> InFlight:
    """How many conversations publishing would leave on their (old) version: one query."""
    live_id = workflow.published_version_id or 0
    counts = WorkflowExecution.objects.filter(workflow=workflow, status__in=IN_FLIGHT).aggregate(
        live=Count("pk", filter=Q(version_id=live_id)),
        live_waiting=Count(
            "pk", filter=Q(version_id=live_id, status=WorkflowExecution.Status.WAITING)
        ),
        total=Count("pk"),
    )
    return InFlight(
        live=counts["live"],
        live_waiting=counts["live_waiting"],
        older=counts["total"] - counts["live"],
    )


def draft_diff_get(*, workflow: Workflow) -> VersionDiff:
    """What publishing the draft would change for users (against the live version)."""
    live = workflow.published_version
    return version_diff(
        live.definition if live else None,
        live.triggers if live else [],
        workflow.draft,
        workflow.triggers,
    )


def _has_split(definition: object) -> bool:
    steps = definition.get("steps") if isinstance(definition, dict) else None
    return isinstance(steps, dict) and any(
        isinstance(step, dict) and step.get("type") == "random_split" for step in steps.values()
    )


def version_history_get(*, workflow: Workflow) -> list[dict]:
    """Every version, newest first, with who/when, its changes and conversations in flight."""
    versions = list(
        WorkflowVersion.objects.filter(workflow=workflow, is_preview=False)
        .select_related("published_by")
        .annotate(
            waiting=Count("executions", filter=Q(executions__status=IN_FLIGHT[0])),
            running=Count("executions", filter=Q(executions__status=IN_FLIGHT[1])),
        )
        .order_by("-number")
    )
    rows = []
    for index, version in enumerate(versions):
        previous = versions[index + 1] if index + 1 < len(versions) else None
        rows.append(
            {
                "version": version,
                "previous": previous,
                "is_live": workflow.published_version_id == version.pk,
                "in_flight": version.waiting + version.running,
                # A/B tests: each random_split variant's reach (one query, only when
                # the version has such a step).
                "splits": split_reach(version_id=version.pk)
                if _has_split(version.definition)
                else {},
                "waiting": version.waiting,
                "diff": version_diff(
                    previous.definition if previous else None,
                    previous.triggers if previous else [],
                    version.definition,
                    version.triggers,
                ),
            }
        )
    return rows


INTERRUPTED_PREFIX = "interrupted"


def interrupted_q() -> Q:
    """Conversations cancelled because the user started something else.

    They are routine (every /start in the middle of a menu makes one), so operators'
    pages hide them unless asked: they would bury the runs worth reading.
    """
    return Q(status=WorkflowExecution.Status.CANCELLED, error__startswith=INTERRUPTED_PREFIX)
