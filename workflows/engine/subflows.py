"""Sub-flows (``call_workflow``): finding the workflow, the way back, ending callers.

The runner (execution.py) pauses a caller and starts the sub-flow; these helpers are
the parts that only read and write rows.
"""

from __future__ import annotations

from datetime import datetime

from workflows.models import Workflow, WorkflowExecution

Status = WorkflowExecution.Status


def workflow_target(project_id: int, slug: str) -> dict | None:
    """The live workflow ``slug`` of the project: its id and published version, or None."""
    return (
        Workflow.objects.filter(
            project_id=project_id, slug=slug, is_active=True, published_version__isnull=False
        )
        .values("id", "published_version_id")
        .first()
    )


def callers_end(execution: WorkflowExecution, *, now: datetime) -> None:
    """A sub-flow failed or was cancelled: its callers (call_workflow) end quietly."""
    parent_id = execution.context.get("return_to")
    for _ in range(8):  # calls nest at most MAX_CALL_DEPTH deep
        if not parent_id:
            return
        parent = WorkflowExecution.objects.filter(pk=parent_id).values("status", "context").first()
        if parent is None or parent["status"] != Status.RUNNING:
            return
        WorkflowExecution.objects.filter(pk=parent_id, status=Status.RUNNING).update(
            status=Status.CANCELLED,
            error="its sub-flow ended without returning",
            finished_at=now,
            wait_until=None,
            updated_at=now,
        )
        parent_id = (parent["context"] or {}).get("return_to")


def call_return(execution: WorkflowExecution) -> WorkflowExecution | None:
    """The caller waiting for this completed sub-flow, locked, or None."""
    parent_id = execution.context.get("return_to")
    if not parent_id:
        return None
    parent = WorkflowExecution.objects.select_for_update().filter(pk=parent_id).first()
    if parent is None or parent.status != Status.RUNNING:
        return None
    pending = parent.context.get("pending") or {}
    if pending.get("kind") != "call" or pending.get("child") != execution.pk:
        return None
    return parent
