"""Synchronous orchestration of executions: start, resume, continue, fail.

Everything here runs inside the caller's transaction and under the session lock
(see :func:`session_lock`), so two events of one chat are processed one after the
other. The runner owns every status change of an execution and keeps the waiting
cache (``workflow:waiting:{session}``) in step with it: a positive entry is always
verified against the row, a negative one is only written under the lock from what
the database says, and leaving the waiting state deletes the key.
"""

from __future__ import annotations

import html
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.core.cache import cache
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Func, JSONField, Value
from django.utils import timezone

from botplatform import batchscope, metrics
from botplatform.cache import (
    WORKFLOW_VERSION_TTL,
    WORKFLOW_WAITING_TTL,
    workflow_version_key,
    workflow_waiting_key,
)
from workflows.engine.events import InputEvent, SendMessage
from workflows.engine.steps import STEP_TYPES
from workflows.engine.steps.base import (
    Goto,
    Jump,
    NotConsumed,
    Outcome,
    Pending,
    StepFailure,
    StepRuntime,
    StepType,
    Wait,
)
from workflows.engine.userdata import UserData
from workflows.models import ExecutionStepLog, Workflow, WorkflowExecution, WorkflowVersion

logger = logging.getLogger(__name__)

MAX_STEPS_PER_EVENT = 100
NOTHING_WAITING = 0  # the cached "no execution waits in this session"
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


# --- Locks and caches -------------------------------------------------------------


def session_lock(session_key: str) -> None:
    """Serialise everything that touches one session's executions (until commit).

    A PostgreSQL transaction-level advisory lock: released by commit or rollback,
    never leaked, and independent of Redis being up. SQLite (the embedded default)
    serialises writers on its own.
    """
    if connection.vendor != "postgresql":
        return
    scope = batchscope.current()
    if scope is not None and session_key in scope.locked_sessions:
        return  # taken with the rest of its batch's sessions
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 7411))",
            [f"workflow-session:{session_key}"],
        )


def sessions_lock_sql(session_keys: list[str]) -> tuple[str, list]:
    """:func:`session_lock` for a whole batch: a SELECT (for the caller to run, or to
    join into one of its statements) taking every lock in a fixed (sorted) order, so
    two batch handlers cannot deadlock on each other. Then call :func:`sessions_locked`.
    """
    keys = [f"workflow-session:{key}" for key in sorted(set(session_keys))]
    return (
        "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 7411))) FROM unnest(%s::text[]) AS k",
        [keys],
    )


def sessions_locked(session_keys: list[str]) -> None:
    """Record in the current batch that its transaction holds these session locks."""
    scope = batchscope.current()
    if scope is not None:
        scope.locked_sessions.update(session_keys)


def waiting_prefetch(session_keys: list[str]) -> None:
    """Row-lock and remember every waiting execution of the batch's sessions (one query).

    Call under the batch's session locks, inside a :mod:`batchscope`: :func:`waiting_get`
    then serves each session once from here instead of querying.
    """
    scope = batchscope.current()
    keys = set(session_keys)
    if scope is None or not keys:
        return
    found: dict[str, list[WorkflowExecution]] = {}
    table = connection.ops.quote_name(WorkflowExecution._meta.db_table)
    # Raw SQL: the ORM would spend longer building this query than the server running it.
    rows = WorkflowExecution.objects.raw(
        f"SELECT * FROM {table} WHERE session_key = ANY(%s) AND status = %s FOR UPDATE",  # noqa: S608
        [sorted(keys), Status.WAITING],
    )
    for execution in rows:
        found.setdefault(execution.session_key, []).append(execution)
    for key in keys:
        rows = found.get(key, [])
        if len(rows) <= 1:  # more than one cannot happen (a unique index); let the query decide
            scope.waiting[key] = rows[0] if rows else None


def _cache_get(key: str):
    """The cache is an accelerator, the database the truth: an unreachable Redis is a miss."""
    try:
        return cache.get(key)
    except Exception:
        logger.warning("cache read of %s failed; using the database", key, exc_info=True)
        return None


def _cache_set(key: str, value, ttl: int) -> None:
    try:
        cache.set(key, value, ttl)
    except Exception:
        logger.warning("cache write of %s failed", key, exc_info=True)
        _cache_delete(key)  # never leave an older answer behind


def _cache_delete(key: str) -> None:
    try:
        cache.delete(key)
    except Exception:
        logger.warning("cache delete of %s failed", key, exc_info=True)


_UNREAD = object()


def waiting_get(session_key: str, *, cached=_UNREAD) -> WorkflowExecution | None:
    """The execution waiting for this session's next input, row-locked (or None).

    Call under :func:`session_lock`. A cached id is checked against the row; the
    cached "nothing waits" is written only here, from the database, under the lock.
    ``cached``: the key's value if the caller already read it (under the lock).
    """
    key = workflow_waiting_key(session_key)
    scope = batchscope.current()
    if scope is not None:
        prefetched, execution = scope.waiting_take(session_key)
        if prefetched:
            # Read for the whole batch under the lock: the database's answer, no query.
            expected = execution.pk if execution else NOTHING_WAITING
            metrics.cache_lookup(
                "workflow_waiting", hit=cached is not _UNREAD and cached is not None
            )
            if cached != expected:
                _cache_set(key, expected, WORKFLOW_WAITING_TTL)
            return execution
        deferred_flush()  # the rows below must show this batch's earlier changes
    if cached is _UNREAD:
        cached = _cache_get(key)
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
    _cache_set(key, execution.pk if execution else NOTHING_WAITING, WORKFLOW_WAITING_TTL)
    return execution


_DEFINITIONS: OrderedDict[int, dict] = OrderedDict()
_DEFINITIONS_MAX = 512


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
    while len(_DEFINITIONS) > _DEFINITIONS_MAX:
        _DEFINITIONS.popitem(last=False)
    return definition


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
    info = _cache_get(key)
    fresh = isinstance(info, dict) and info.get("id") == version_id
    metrics.cache_lookup("workflow_version", hit=fresh)
    if not fresh:
        row = WorkflowVersion.objects.values("id", "number", "definition").get(pk=version_id)
        info = {"id": row["id"], "number": row["number"], "definition": row["definition"]}
        _cache_set(key, info, WORKFLOW_VERSION_TTL)
    definition_for_version(info["id"], info["definition"])
    return info


# --- One event's run -------------------------------------------------------------


@dataclass
class RunState:
    """What one event (or timer) is doing: shared by every execution it touches."""

    user: object
    bot: object
    session_key: str
    event: InputEvent | None
    now: datetime = field(default_factory=timezone.now)
    actions: list = field(default_factory=list)
    logs: list[ExecutionStepLog] = field(default_factory=list)
    steps_taken: int = 0
    waiting_id: int | None = None  # the session's waiting execution, as far as we know
    waiting_cached_id: int | None = None  # the id the session's waiting key holds now
    level_ups: list[str] = field(default_factory=list)
    # The chat the session's messages go to, when it is not the user's latest chat
    # (a continuation of a group conversation after the user wrote elsewhere).
    chat: int | None = None
    data: UserData = field(init=False)

    def __post_init__(self) -> None:
        self.data = UserData(self.user, self.bot)

    @property
    def chat_id(self) -> int:
        return self.chat if self.chat is not None else self.user.chat_id

    def flush(self) -> None:
        if self.logs:
            scope = batchscope.current()
            if scope is not None:
                scope.step_logs.extend(self.logs)  # inserted with the batch's writes
            else:
                ExecutionStepLog.objects.bulk_create(self.logs)
            self.logs = []


# --- Writes put off to the end of a batch ---------------------------------------------


def _executions_update(executions: list[WorkflowExecution]) -> tuple[str, list]:
    now = timezone.now()
    rows, params = [], []
    for execution in executions:
        execution.updated_at = now
        rows.append(
            "(%s::bigint, %s::varchar, %s::varchar, %s::jsonb, %s::timestamptz,"
            " %s::text, %s::timestamptz, %s::timestamptz)"
        )
        params += [
            execution.pk,
            execution.status,
            execution.current_step,
            json.dumps(execution.context),
            execution.wait_until,
            execution.error,
            execution.finished_at,
            now,
        ]
    table = connection.ops.quote_name(WorkflowExecution._meta.db_table)
    sql = (
        f"UPDATE {table} AS t SET status = v.status, current_step = v.current_step,"  # noqa: S608
        " context = v.context, wait_until = v.wait_until, error = v.error,"
        " finished_at = v.finished_at, updated_at = v.updated_at"
        f" FROM (VALUES {', '.join(rows)}) AS v(id, status, current_step, context,"
        " wait_until, error, finished_at, updated_at) WHERE t.id = v.id"
    )
    return sql, params


def _step_logs_insert(logs: list[ExecutionStepLog]) -> tuple[str, list]:
    now = timezone.now()
    rows, params = [], []
    for log in logs:
        rows.append("(%s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s)")
        params += [
            log.execution_id,
            log.step,
            log.step_type,
            json.dumps(log.input),
            json.dumps(log.output),
            log.duration_ms,
            log.error,
            now,
        ]
    table = connection.ops.quote_name(ExecutionStepLog._meta.db_table)
    sql = (
        f"INSERT INTO {table} (execution_id, step, step_type, input, output, duration_ms,"  # noqa: S608
        f" error, created_at) VALUES {', '.join(rows)}"
    )
    return sql, params


def deferred_writes() -> list[tuple[str, list]]:
    """The current batch's put-off writes as (sql, params), and forget them.

    The caller runs them (the batch joins them into its one write statement). The
    executions are distinct rows and only ever stay waiting, so one UPDATE cannot
    trip the one-waiting-per-session index half-way.
    """
    scope = batchscope.current()
    if scope is None:
        return []
    statements = []
    if scope.executions:
        statements.append(_executions_update(list(scope.executions.values())))
        scope.executions = {}
    if scope.step_logs:
        statements.append(_step_logs_insert(scope.step_logs))
        scope.step_logs = []
    return statements


def deferred_flush() -> None:
    """Write the batch's put-off changes now (before a query that must see them)."""
    statements = deferred_writes()
    if statements:
        with connection.cursor() as cursor:
            for sql, params in statements:
                cursor.execute(sql, params)


def _save(execution: WorkflowExecution) -> None:
    """Write the execution's state; in a batch, a waiting state waits for the batch's
    write. Leaving the waiting state is written at once, so a new wait in the same
    session can never meet the old one in the one-waiting-per-session index."""
    scope = batchscope.current()
    if scope is not None and execution.status == Status.WAITING:
        scope.executions[execution.pk] = execution
        return
    if scope is not None:
        scope.executions.pop(execution.pk, None)
    execution.save(update_fields=SAVE_FIELDS)


def _persist(state: RunState, execution: WorkflowExecution, *, was_waiting: bool) -> None:
    _save(execution)
    key = workflow_waiting_key(execution.session_key)
    same_session = execution.session_key == state.session_key
    if execution.status == Status.WAITING:
        if not (same_session and state.waiting_cached_id == execution.pk):
            _cache_set(key, execution.pk, WORKFLOW_WAITING_TTL)
        # else the cache already names this very execution: no write. Its TTL may run
        # out mid-conversation; the next read then restores it from the database.
        if same_session:
            state.waiting_cached_id = execution.pk
        state.waiting_id = execution.pk
    elif was_waiting:
        _cache_delete(key)
        if same_session:
            state.waiting_cached_id = None
        if state.waiting_id == execution.pk:
            state.waiting_id = None


def _close(
    state: RunState,
    execution: WorkflowExecution,
    status: str,
    *,
    error: str = "",
    was_waiting: bool = False,
) -> None:
    execution.status = status
    execution.error = error[:5000]
    execution.wait_until = None
    execution.finished_at = state.now
    execution.context.pop("wait", None)
    execution.context.pop("pending", None)
    _persist(state, execution, was_waiting=was_waiting)


def execution_cancel(state: RunState, execution: WorkflowExecution, reason: str) -> None:
    """Cancel a waiting or paused execution (its buttons become stale)."""
    was_waiting = execution.status == Status.WAITING
    _close(state, execution, Status.CANCELLED, error=reason, was_waiting=was_waiting)


# --- Who wins when a user does two things at once (docs/workflows.md) -----------------

SUPERSEDED = "interrupted: superseded by a newer conversation in this chat"


def session_unfinished_cancel(
    state: RunState, reason: str, *, waiting: WorkflowExecution | None
) -> int:
    """An interrupting command: end every unfinished conversation of the session.

    The waiting one and the paused ones (a delay, an HTTP request) in ONE UPDATE
    under the session lock, so an interrupting ``/start`` costs no more statements
    than before; queued continuations then find them cancelled and do nothing.
    ``waiting``: the session's waiting execution as the caller read it (or None).
    """
    scope = batchscope.current()
    if scope is not None:
        # A wait of this session not written yet must not be written back after this.
        for pk, execution in list(scope.executions.items()):
            if execution.session_key == state.session_key:
                del scope.executions[pk]
    cancelled = WorkflowExecution.objects.filter(
        session_key=state.session_key, status__in=[Status.WAITING, Status.RUNNING]
    ).update(
        status=Status.CANCELLED,
        error=reason[:5000],
        finished_at=state.now,
        wait_until=None,
        context=Func(
            F("context"),
            Value("pending"),
            Value("wait"),
            function="",
            arg_joiner=" - ",
            output_field=JSONField(),
        ),
        updated_at=state.now,
    )
    if waiting is not None:
        waiting.status = Status.CANCELLED
        _cache_delete(workflow_waiting_key(state.session_key))
        state.waiting_cached_id = None
        if state.waiting_id == waiting.pk:
            state.waiting_id = None
    return cancelled


def execution_superseded(state: RunState, execution: WorkflowExecution) -> bool:
    """Latest user action wins: may a continuation (delay, HTTP result, timeout) go on?

    Only while no conversation started later in the same session is unfinished
    (waiting or paused). Otherwise the execution ends here, cancelled with the
    reason :data:`SUPERSEDED`, and True is returned. Call under the session lock.
    """
    newer = WorkflowExecution.objects.filter(
        session_key=execution.session_key,
        pk__gt=execution.pk,
        status__in=[Status.WAITING, Status.RUNNING],
    ).exists()
    if newer:
        execution_cancel(state, execution, SUPERSEDED)
    return newer


def _fail(
    state: RunState, execution: WorkflowExecution, message: str, *, was_waiting: bool
) -> None:
    _close(state, execution, Status.FAILED, error=message, was_waiting=was_waiting)
    from botplatform.models import Project

    fallback = (
        Project.objects.filter(pk=execution.project_id)
        .values_list("fallback_message", flat=True)
        .first()
    )
    if fallback:
        state.actions.append(SendMessage(chat_id=state.chat_id, text=html.escape(fallback)))


def _clear_other_waiting(state: RunState, execution: WorkflowExecution) -> None:
    """Only one execution waits per session: the newest prompt wins."""
    if state.waiting_id is None or state.waiting_id == execution.pk:
        return
    deferred_flush()
    WorkflowExecution.objects.filter(pk=state.waiting_id, status=Status.WAITING).update(
        status=Status.CANCELLED,
        error="replaced by a newer conversation in the same chat",
        finished_at=state.now,
        wait_until=None,
        updated_at=state.now,
    )
    state.waiting_id = None


StepCall = Callable[[StepType, StepRuntime], Outcome]


def _run_step(handler: StepType, rt: StepRuntime, call: StepCall) -> Outcome:
    if handler.atomic:
        with transaction.atomic():
            return call(handler, rt)
    return call(handler, rt)


def drive(
    state: RunState,
    execution: WorkflowExecution,
    definition: dict,
    step_id: str | None,
    call: StepCall,
    *,
    was_waiting: bool = False,
    log_input: dict | None = None,
) -> bool:
    """Run steps from ``step_id`` until the execution waits, pauses or ends.

    ``call`` is how the first step is entered (run, resume with input, timer);
    later steps are run. Returns False only when the first step did not take the
    input (:class:`NotConsumed`); nothing has changed then.
    """
    first = True
    while True:
        if step_id is None:
            _close(state, execution, Status.COMPLETED, was_waiting=was_waiting)
            return True
        step = definition["steps"].get(step_id)
        handler = STEP_TYPES.get(step.get("type")) if isinstance(step, dict) else None
        if handler is None:
            _fail(
                state,
                execution,
                f"Step '{step_id}' does not exist in version {execution.version_id}.",
                was_waiting=was_waiting,
            )
            return True
        state.steps_taken += 1
        if state.steps_taken > MAX_STEPS_PER_EVENT:
            _fail(
                state,
                execution,
                f"Stopped at step '{step_id}': more than {MAX_STEPS_PER_EVENT} steps "
                "without waiting for the user (a loop?).",
                was_waiting=was_waiting,
            )
            return True
        rt = StepRuntime(
            execution=execution,
            step_id=step_id,
            step=step,
            data=state.data,
            chat_id=state.chat_id,
            event=state.event,
            actions=state.actions,
            now=state.now,
        )
        started = time.perf_counter()
        error = ""
        try:
            outcome = _run_step(handler, rt, call)
        except StepFailure as exc:
            error = str(exc)
        except DatabaseError:
            if not handler.atomic:
                raise  # the transaction is unusable; let the whole event roll back
            logger.exception("workflow step %s failed", step_id)
            error = "a database error occurred"
        except Exception as exc:
            logger.exception("workflow step %s failed", step_id)
            error = f"{type(exc).__name__}: {exc}"
        if not error and isinstance(outcome, NotConsumed):
            if first:
                return False
            error = "the step cannot run here"
        state.logs.append(
            ExecutionStepLog(
                execution=execution,
                step=step_id,
                step_type=step["type"],
                input=(log_input or {}) if first else {},
                output=rt.output,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
                error=error,
            )
        )
        execution.current_step = step_id
        if error:
            _fail(
                state,
                execution,
                f"Step '{step_id}' ({step['type']}) failed: {error}",
                was_waiting=was_waiting,
            )
            return True
        first = False
        call = _call_run
        if rt.output.get("new_level"):
            state.level_ups.append(rt.output["new_level"])
        if isinstance(outcome, Goto):
            step_id = outcome.step
            continue
        if isinstance(outcome, Wait):
            _clear_other_waiting(state, execution)
            previous = execution.context.get("wait") or {}
            wait = {"step": step_id, "kind": outcome.kind, **outcome.state}
            if "seq" not in wait and previous.get("step") == step_id:
                wait["seq"] = previous.get("seq", 0)
            execution.context["wait"] = wait
            execution.context.pop("pending", None)
            execution.status = Status.WAITING
            execution.wait_until = outcome.until
            _persist(state, execution, was_waiting=was_waiting)
            return True
        if isinstance(outcome, Pending):
            execution.context["pending"] = {"step": step_id, "kind": outcome.kind, **outcome.state}
            execution.context.pop("wait", None)
            execution.status = Status.RUNNING
            execution.wait_until = outcome.until
            _persist(state, execution, was_waiting=was_waiting)
            _queue_pending(execution.pk, outcome)
            return True
        if isinstance(outcome, Jump):
            target = (
                Workflow.objects.filter(
                    project_id=execution.project_id,
                    slug=outcome.workflow,
                    is_active=True,
                    published_version__isnull=False,
                )
                .values("id", "published_version_id")
                .first()
            )
            if target is None:
                _fail(
                    state,
                    execution,
                    f"Step '{step_id}' (start_workflow) failed: the workflow "
                    f"'{outcome.workflow}' does not exist, is inactive or is not published.",
                    was_waiting=was_waiting,
                )
                return True
            _close(state, execution, Status.COMPLETED, was_waiting=was_waiting)
            execution = _execution_create(state, target["id"], target["published_version_id"])
            definition = definition_for_version(execution.version_id)
            step_id = definition["start"]
            was_waiting = False
            continue
        raise TypeError(f"unknown outcome {outcome!r}")


def _call_run(handler: StepType, rt: StepRuntime) -> Outcome:
    return handler.run(rt)


def _queue_pending(execution_id: int, outcome: Pending) -> None:
    from workflows import tasks

    seq = outcome.state["seq"]
    if outcome.kind == "http":
        transaction.on_commit(lambda: tasks.http_request_run.delay(execution_id, seq))
    elif outcome.kind == "delay":
        seconds = (outcome.until - timezone.now()).total_seconds()
        # Long delays are left to the periodic sweep: a broker holding ETA tasks for
        # days redelivers them after its visibility timeout.
        if seconds <= tasks.DELAY_TASK_MAX_SECONDS:
            until = outcome.until
            transaction.on_commit(
                lambda: tasks.delay_continue.apply_async((execution_id, seq), eta=until)
            )


def _execution_create(state: RunState, workflow_id: int, version_id: int) -> WorkflowExecution:
    user = state.user
    info = published_version_get(
        project_id=user.project_id, workflow_id=workflow_id, version_id=version_id
    )
    return WorkflowExecution.objects.create(
        project_id=user.project_id,
        workflow_id=workflow_id,
        version_id=info["id"],
        user=user,
        bot=state.bot,
        session_key=state.session_key,
        status=Status.RUNNING,
        current_step=info["definition"]["start"],
        context={"seq": 0},
    )


def _event_input(event: InputEvent | None) -> dict:
    if event is None:
        return {}
    data = {"event": event.kind}
    for name in ("text", "command", "payload", "callback_data"):
        value = getattr(event, name)
        if value:
            data[name] = value[:200]
    return data


def execution_start(state: RunState, *, workflow_id: int, version_id: int) -> WorkflowExecution:
    """Start a new execution of a workflow's published version and run it."""
    execution = _execution_create(state, workflow_id, version_id)
    definition = definition_for_version(execution.version_id)
    drive(
        state,
        execution,
        definition,
        definition["start"],
        _call_run,
        log_input=_event_input(state.event),
    )
    return execution


def execution_resume(state: RunState, execution: WorkflowExecution) -> bool:
    """Hand the event to the waiting step; False when the step does not take it."""
    definition = definition_for_version(execution.version_id)
    wait = execution.context.get("wait") or {}
    event = state.event

    def call(handler: StepType, rt: StepRuntime) -> Outcome:
        return handler.resume(rt, event)

    return drive(
        state,
        execution,
        definition,
        wait.get("step") or execution.current_step,
        call,
        was_waiting=True,
        log_input=_event_input(event),
    )


def execution_continue(
    state: RunState, execution: WorkflowExecution, data: dict | None = None
) -> None:
    """Continue after a timer or background task (the pending step's ``timer``)."""
    definition = definition_for_version(execution.version_id)
    pending = execution.context.pop("pending", {})

    def call(handler: StepType, rt: StepRuntime) -> Outcome:
        return handler.timer(rt, data)

    drive(
        state,
        execution,
        definition,
        pending.get("step") or execution.current_step,
        call,
        log_input={"event": "timer", "kind": pending.get("kind", "")},
    )


def execution_time_out(state: RunState, execution: WorkflowExecution) -> None:
    """The user did not answer in time: the ``on_timeout`` step, else cancel."""
    definition = definition_for_version(execution.version_id)
    wait = execution.context.get("wait") or {}
    step = definition["steps"].get(wait.get("step") or execution.current_step) or {}
    target = step.get("on_timeout")
    if not target:
        _close(
            state,
            execution,
            Status.CANCELLED,
            error="timed out waiting for the user",
            was_waiting=True,
        )
        return
    execution.context.pop("wait", None)
    execution.status = Status.RUNNING
    drive(
        state,
        execution,
        definition,
        target,
        _call_run,
        was_waiting=True,
        log_input={"event": "timeout", "step": wait.get("step", "")},
    )
