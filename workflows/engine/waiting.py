"""Which execution waits for a session's next input: the row, read through a cache.

``workflow:waiting:{session}`` holds the waiting execution's id, or
:data:`NOTHING_WAITING`. The cache is an accelerator, the database the truth: a
cached id is always verified against the row; "nothing waits" is written only from
what the database says, under the session lock
(:func:`botplatform.locks.session_lock`); leaving the waiting state deletes the key.
"""

from __future__ import annotations

from django.core.cache import cache
from django.db import connection

from botplatform import metrics
from botplatform.bulk import any_of
from botplatform.cache import WORKFLOW_WAITING_TTL, workflow_waiting_key
from botplatform.rawmodels import models_from_sql
from workflows.engine.batch import Batch
from workflows.engine.deferred import deferred_flush
from workflows.models import WorkflowExecution

NOTHING_WAITING = 0  # the cached "no execution waits in this session"
Status = WorkflowExecution.Status
_UNREAD = object()


def waiting_cache_set(session_key: str, execution_id: int) -> None:
    """Remember which execution waits (:data:`NOTHING_WAITING`: none)."""
    cache.set(workflow_waiting_key(session_key), execution_id, WORKFLOW_WAITING_TTL)


def waiting_cache_clear(session_key: str) -> None:
    """The session's waiting execution stopped waiting: forget the cached answer."""
    cache.delete(workflow_waiting_key(session_key))


def waiting_prefetch(batch: Batch, session_keys: list[str]) -> None:
    """Row-lock and remember in ``batch`` every waiting execution of its sessions (one
    query).

    Call under the batch's session locks: :func:`waiting_get` given the same batch
    then serves each session once from here instead of querying.
    """
    keys = set(session_keys)
    if not keys:
        return
    found: dict[str, list[WorkflowExecution]] = {}
    table = connection.ops.quote_name(WorkflowExecution._meta.db_table)
    # Raw SQL: the ORM would spend longer building this query than the server running it
    # (and raw() longer mapping its columns: botplatform.rawmodels).
    rows = models_from_sql(
        WorkflowExecution,
        f"SELECT * FROM {table} WHERE session_key = {any_of('text[]')} AND status = %s"  # noqa: S608
        " FOR UPDATE",
        [sorted(keys), Status.WAITING],
    )
    for execution in rows:
        found.setdefault(execution.session_key, []).append(execution)
    for key in keys:
        rows = found.get(key, [])
        if len(rows) <= 1:  # more than one cannot happen (a unique index); let the query decide
            batch.waiting[key] = rows[0] if rows else None


def waiting_get(
    session_key: str, *, cached=_UNREAD, batch: Batch | None = None
) -> WorkflowExecution | None:
    """The execution waiting for this session's next input, row-locked (or None).

    Call under the session lock. A cached id is checked against the row; the
    cached "nothing waits" is written only here, from the database, under the lock.
    ``cached``: the key's value if the caller already read it (under the lock).
    ``batch``: the batch this read belongs to (its read-ahead serves it), or None.
    """
    if batch is not None:
        prefetched, execution = batch.waiting_take(session_key)
        if prefetched:
            # Read for the whole batch under the lock: the database's answer, no query.
            expected = execution.pk if execution else NOTHING_WAITING
            metrics.cache_lookup(
                "workflow_waiting", hit=cached is not _UNREAD and cached is not None
            )
            if cached != expected:
                waiting_cache_set(session_key, expected)
            return execution
        deferred_flush(batch)  # the rows below must show this batch's earlier changes
    if cached is _UNREAD:
        cached = cache.get(workflow_waiting_key(session_key))
    metrics.cache_lookup("workflow_waiting", hit=cached is not None)
    if cached == NOTHING_WAITING:
        return None
    rows = WorkflowExecution.objects.select_for_update().filter(
        session_key=session_key, status=Status.WAITING
    )
    if isinstance(cached, int) and cached > 0:
        execution = rows.filter(pk=cached).first()
        if execution is not None:
            return execution
    execution = rows.first()
    waiting_cache_set(session_key, execution.pk if execution else NOTHING_WAITING)
    return execution
