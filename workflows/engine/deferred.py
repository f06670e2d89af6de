"""Writes a batch puts off to its end, as bulk SQL: executions' waiting state, step logs.

In a batch (:class:`workflows.engine.batch.Batch`, passed explicitly) a conversation
that goes on waiting is not written at once; :func:`deferred_writes` hands its new state and the step logs to the
batch as (sql, params), joined into the batch's one write statement. Outside a batch
everything here writes at once.
"""

from __future__ import annotations

import json

from django.db import connection
from django.utils import timezone

from botplatform.bulk import rows_insert_sql, rows_update_sql
from workflows.engine.batch import Batch
from workflows.models import ExecutionStepLog, WorkflowExecution

Status = WorkflowExecution.Status
SAVE_FIELDS = [
    "status",
    "current_step",
    "context",
    "wait_until",
    "error",
    "finished_at",
    "updated_at",
]
_EXECUTION_CASTS = {
    "id": "bigint",
    "status": "varchar",
    "current_step": "varchar",
    "context": "jsonb",
    "wait_until": "timestamptz",
    "error": "text",
    "finished_at": "timestamptz",
    "updated_at": "timestamptz",
}


def executions_update_sql(executions: list[WorkflowExecution]) -> tuple[str, list]:
    """One UPDATE writing every execution's :data:`SAVE_FIELDS`."""
    now = timezone.now()
    rows = []
    for execution in executions:
        execution.updated_at = now
        rows.append(
            (
                execution.pk,
                execution.status,
                execution.current_step,
                json.dumps(execution.context),
                execution.wait_until,
                execution.error,
                execution.finished_at,
                now,
            )
        )
    return rows_update_sql(
        WorkflowExecution._meta.db_table,
        key="id",
        columns=SAVE_FIELDS,
        rows=rows,
        casts=_EXECUTION_CASTS,
    )


_STEP_LOG_COLUMNS = [
    "execution_id",
    "step",
    "step_type",
    "input",
    "output",
    "duration_ms",
    "error",
    "created_at",
]
_STEP_LOG_CASTS = {
    "execution_id": "bigint",
    "step": "varchar",
    "step_type": "varchar",
    "input": "jsonb",
    "output": "jsonb",
    "duration_ms": "double precision",
    "error": "text",
    "created_at": "timestamptz",
}


def step_logs_insert_sql(logs: list[ExecutionStepLog]) -> tuple[str, list]:
    """One INSERT of every step log."""
    now = timezone.now()
    rows = [
        (
            log.execution_id,
            log.step,
            log.step_type,
            json.dumps(log.input),
            json.dumps(log.output),
            log.duration_ms,
            log.error,
            now,
        )
        for log in logs
    ]
    return rows_insert_sql(
        ExecutionStepLog._meta.db_table,
        columns=_STEP_LOG_COLUMNS,
        rows=rows,
        casts=_STEP_LOG_CASTS,
    )


def deferred_writes(batch: Batch | None) -> list[tuple[str, list]]:
    """The batch's put-off writes as (sql, params), and forget them.

    The caller runs them (the batch joins them into its one write statement). The
    executions are distinct rows and only ever stay waiting, so one UPDATE cannot
    trip the one-waiting-per-session index half-way.
    """
    if batch is None:
        return []
    statements = []
    if batch.executions:
        statements.append(executions_update_sql(list(batch.executions.values())))
        batch.executions = {}
    if batch.step_logs:
        statements.append(step_logs_insert_sql(batch.step_logs))
        batch.step_logs = []
    return statements


def deferred_flush(batch: Batch | None) -> None:
    """Write the batch's put-off changes now (before a query that must see them)."""
    statements = deferred_writes(batch)
    if statements:
        with connection.cursor() as cursor:
            for sql, params in statements:
                cursor.execute(sql, params)


def deferred_forget_session(batch: Batch | None, session_key: str) -> None:
    """A session's conversations were just ended: its put-off waits must not be
    written back over that."""
    if batch is not None:
        for pk, execution in list(batch.executions.items()):
            if execution.session_key == session_key:
                del batch.executions[pk]


def execution_save(execution: WorkflowExecution, batch: Batch | None) -> None:
    """Write the execution's state; in a batch, a waiting state waits for the batch's
    write. Leaving the waiting state is written at once, so a new wait in the same
    session can never meet the old one in the one-waiting-per-session index."""
    if batch is not None and execution.status == Status.WAITING:
        batch.executions[execution.pk] = execution
        return
    if batch is not None:
        batch.executions.pop(execution.pk, None)
    execution.save(update_fields=SAVE_FIELDS)


def step_logs_write(logs: list[ExecutionStepLog], batch: Batch | None) -> None:
    """Insert step logs now, or with the batch's writes when in a batch."""
    if batch is not None:
        batch.step_logs.extend(logs)
    else:
        ExecutionStepLog.objects.bulk_create(logs)
