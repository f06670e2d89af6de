"""Reads for the operators' admin: versions, waiting conversations, diffs."""

from __future__ import annotations

import difflib
import json

from django.db.models import Count, Q

from workflows.models import Workflow, WorkflowExecution, WorkflowVersion

IN_FLIGHT = (WorkflowExecution.Status.WAITING, WorkflowExecution.Status.RUNNING)


def version_history_get(*, workflow: Workflow) -> list[dict]:
    """Every version, newest first, with who/when, its diff and conversations in flight."""
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
                "is_live": workflow.published_version_id == version.pk,
                "in_flight": version.waiting + version.running,
                "waiting": version.waiting,
                "diff": definition_diff(
                    previous.definition if previous else None,
                    version.definition,
                    before=f"version {previous.number}" if previous else "nothing",
                    after=f"version {version.number}",
                ),
            }
        )
    return rows


def definition_pretty(definition) -> list[str]:
    if definition is None:
        return []
    return json.dumps(definition, indent=2, ensure_ascii=False, sort_keys=False).splitlines()


def definition_diff(old, new, *, before: str, after: str) -> list[tuple[str, str]]:
    """(css class, line) of a unified diff of the pretty JSON of two definitions."""
    lines = []
    for line in difflib.unified_diff(
        definition_pretty(old), definition_pretty(new), before, after, lineterm="", n=2
    ):
        if line.startswith(("+++", "---")):
            kind = "head"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "same"
        lines.append((kind, line))
    return lines


INTERRUPTED_PREFIX = "interrupted"


def interrupted_q() -> Q:
    """Conversations cancelled because the user started something else.

    They are routine (every /start in the middle of a menu makes one), so operators'
    pages hide them unless asked: they would bury the runs worth reading.
    """
    return Q(status=WorkflowExecution.Status.CANCELLED, error__startswith=INTERRUPTED_PREFIX)
