"""A/B tests: how many conversations each ``random_split`` variant reached, per version.

Read from the step log (each ``random_split`` run logs its ``variant``), so counting
costs the conversation nothing and needs no counter row that every user would lock.
"""

from __future__ import annotations

from django.db.models import Count

from workflows.models import ExecutionStepLog


def split_reach(*, version_id: int) -> dict[str, dict[str, int]]:
    """``{step id: {variant name: conversations}}`` for one published version."""
    rows = (
        ExecutionStepLog.objects.filter(
            execution__version_id=version_id, step_type="random_split", error=""
        )
        .values("step", "output__variant")
        .annotate(reached=Count("id"))
        .order_by("step", "output__variant")
    )
    found: dict[str, dict[str, int]] = {}
    for row in rows:
        variant = row["output__variant"]
        if isinstance(variant, str):
            found.setdefault(row["step"], {})[variant] = row["reached"]
    return found
