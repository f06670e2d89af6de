"""The published-definition cache: a version's definition without a query.

Versions are immutable, so a process-local copy (:func:`definition_for_version`) is
exact for ever; the Redis entry ``workflow:version:{project}:{workflow}`` names the
workflow's *published* version and is checked against the id the caller just read
from the workflow row, so a stale entry is replaced instead of served.
"""

from __future__ import annotations

from collections import OrderedDict

from django.core.cache import cache

from botplatform import metrics
from botplatform.cache import WORKFLOW_VERSION_TTL, workflow_version_key
from workflows.models import WorkflowVersion

_DEFINITIONS: OrderedDict[int, dict] = OrderedDict()
DEFINITIONS_MAX = 512
_limit = DEFINITIONS_MAX


def definition_for_version(version_id: int, definition: dict | None = None) -> dict:
    """A version's definition; versions are immutable, so a process-local copy is exact."""
    if definition is not None:
        _DEFINITIONS[version_id] = definition
    elif version_id in _DEFINITIONS:
        _DEFINITIONS.move_to_end(version_id)
        return _DEFINITIONS[version_id]
    else:
        definition = WorkflowVersion.objects.values_list("definition", flat=True).get(pk=version_id)
        _DEFINITIONS[version_id] = definition
    while len(_DEFINITIONS) > _limit:
        _DEFINITIONS.popitem(last=False)
    return definition


def definition_cache_resize(max_entries: int) -> None:
    """Keep at most ``max_entries`` definitions in this process (0: none, for benchmarks
    that measure the uncached path)."""
    global _limit
    _limit = max_entries
    while len(_DEFINITIONS) > _limit:
        _DEFINITIONS.popitem(last=False)


def published_version_get(*, project_id: int, workflow_id: int, version_id: int) -> dict:
    """{"id", "number", "definition"} of the workflow's published version, cached 1 h.

    ``version_id`` comes from the workflow row just read, so a stale cache entry (an
    older version) is noticed and replaced instead of served.
    """
    if version_id in _DEFINITIONS:
        # Immutable and already in this process: no round trip at all.
        metrics.cache_lookup("workflow_version", hit=True)
        return {"id": version_id, "definition": definition_for_version(version_id)}
    key = workflow_version_key(project_id, workflow_id)
    info = cache.get(key)
    fresh = isinstance(info, dict) and info.get("id") == version_id
    metrics.cache_lookup("workflow_version", hit=fresh)
    if not fresh:
        row = WorkflowVersion.objects.values("id", "number", "definition").get(pk=version_id)
        info = {"id": row["id"], "number": row["number"], "definition": row["definition"]}
        cache.set(key, info, WORKFLOW_VERSION_TTL)
    definition_for_version(info["id"], info["definition"])
    return info


def published_version_remember(*, project_id: int, version: WorkflowVersion) -> None:
    """Publishing: name ``version`` as the workflow's published one in the cache (call
    after the publish commits, so no reader sees a version the database does not)."""
    info = {"id": version.pk, "number": version.number, "definition": version.definition}
    cache.set(workflow_version_key(project_id, version.workflow_id), info, WORKFLOW_VERSION_TTL)
