"""The step loop and an execution's lifecycle: start, resume, continue, time out, cancel.

Everything here runs inside the caller's transaction and under the session lock
(:func:`botplatform.locks.session_lock`), so two events of one chat are processed one
after the other. This module owns every status change of an execution and keeps the
waiting cache (:mod:`workflows.engine.waiting`) in step with it. Definitions come from
:mod:`workflows.engine.version_cache`; writes a batch puts off are in
:mod:`workflows.engine.deferred`.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import DatabaseError, transaction
from django.db.models import F, Func, JSONField, Value
from django.utils import timezone

from botplatform.conversation import InputEvent, SendMessage
from botplatform.languages import system_text
from workflows.engine.batch import Batch
from workflows.engine.deferred import (
    deferred_flush,
    deferred_forget_session,
    execution_save,
    step_logs_write,
)
from workflows.engine.steps import STEP_TYPES
from workflows.engine.steps.base import (
    Call,
    Goto,
    Jump,
    NotConsumed,
    Outcome,
    Pending,
    StepFailure,
    StepRuntime,
    StepType,
    Wait,
    data_language,
)
from workflows.engine.subflows import call_return, callers_end, workflow_target
from workflows.engine.userdata import UserData, event_data
from workflows.engine.version_cache import definition_for_version, published_version_get
from workflows.engine.waiting import waiting_cache_clear, waiting_cache_set
from workflows.models import ExecutionStepLog, WorkflowExecution

logger = logging.getLogger(__name__)

MAX_STEPS_PER_EVENT = 100
Status = WorkflowExecution.Status


# --- One event's run -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingWork:
    """Background work a step asked for (an HTTP call, a delay's continuation).

    The engine only records it: the service that drove the event queues it once the
    transaction commits, so the engine never schedules anything itself.
    """

    execution_id: int
    kind: str  # "http" | "delay"
    seq: int
    until: datetime


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
    pending: list[PendingWork] = field(default_factory=list)  # queued after commit
    # The chat the session's messages go to, when it is not the user's latest chat
    # (a continuation of a group conversation after the user wrote elsewhere).
    chat: int | None = None
    # The batch this event belongs to (its read-ahead, its put-off writes), or None.
    batch: Batch | None = None
    data: UserData = field(init=False)

    def __post_init__(self) -> None:
        self.data = UserData(self.user, self.bot)
        if self.event is not None and self.event.kind == "event":
            self.data.event_data = event_data(self.event)

    @property
    def chat_id(self) -> int:
        return self.chat if self.chat is not None else self.user.chat_id

    def flush(self) -> None:
        if self.logs:
            step_logs_write(self.logs, self.batch)
            self.logs = []


def _persist(state: RunState, execution: WorkflowExecution, *, was_waiting: bool) -> None:
    execution_save(execution, state.batch)
    same_session = execution.session_key == state.session_key
    if execution.status == Status.WAITING:
        if not (same_session and state.waiting_cached_id == execution.pk):
            waiting_cache_set(execution.session_key, execution.pk)
        # else the cache already names this very execution: no write. Its TTL may run
        # out mid-conversation; the next read then restores it from the database.
        if same_session:
            state.waiting_cached_id = execution.pk
        state.waiting_id = execution.pk
    elif was_waiting:
        waiting_cache_clear(execution.session_key)
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
    if status != Status.COMPLETED and execution.context.get("return_to"):
        callers_end(execution, now=state.now)


def _call_begin(
    state: RunState, execution: WorkflowExecution, step_id: str, slug: str, *, was_waiting: bool
) -> WorkflowExecution | None:
    """Pause ``execution`` on its call_workflow step and create the sub-flow's execution.

    None when the workflow cannot be run (the caller has failed then).
    """
    from workflows.engine.steps.call_workflow import CALL_TIMEOUT_DAYS

    target = workflow_target(execution.project_id, slug)
    if target is None:
        _fail(
            state,
            execution,
            f"Step '{step_id}' (call_workflow) failed: the workflow '{slug}' does not exist, "
            "is inactive or is not published.",
            was_waiting=was_waiting,
        )
        return None
    child = _execution_create(
        state,
        target["id"],
        target["published_version_id"],
        execution.context.get("trigger"),
        extra={"return_to": execution.pk, "call_depth": execution.context.get("call_depth", 0) + 1},
    )
    seq = int(execution.context.get("seq", 0)) + 1
    execution.context["seq"] = seq
    execution.context["pending"] = {"step": step_id, "kind": "call", "seq": seq, "child": child.pk}
    execution.context.pop("wait", None)
    execution.status = Status.RUNNING
    execution.wait_until = state.now + timedelta(days=CALL_TIMEOUT_DAYS)
    _persist(state, execution, was_waiting=was_waiting)
    return child


def _returned(handler: StepType, rt: StepRuntime) -> Outcome:
    """How :func:`drive` re-enters a call_workflow step whose sub-flow completed."""
    return handler.timer(rt, {"returned": True})


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
    deferred_forget_session(state.batch, state.session_key)
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
        waiting_cache_clear(state.session_key)
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
        fallback = system_text(fallback, data_language(state.data, execution.project_id))
        state.actions.append(SendMessage(chat_id=state.chat_id, text=html.escape(fallback)))


def _clear_other_waiting(state: RunState, execution: WorkflowExecution) -> None:
    """Only one execution waits per session: the newest prompt wins."""
    if state.waiting_id is None or state.waiting_id == execution.pk:
        return
    deferred_flush(state.batch)
    WorkflowExecution.objects.filter(pk=state.waiting_id, status=Status.WAITING).update(
        status=Status.CANCELLED,
        error="replaced by a newer conversation in the same chat",
        finished_at=state.now,
        wait_until=None,
        updated_at=state.now,
    )
    state.waiting_id = None


StepCall = Callable[[StepType, StepRuntime], Outcome]


def _run_step(handler: StepType, rt: StepRuntime, call: StepCall, *, savepoint: bool) -> Outcome:
    if savepoint:
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
            parent = call_return(execution)
            if parent is None:
                return True
            # A sub-flow completed: its caller goes on after the call_workflow step.
            step_id = (parent.context.pop("pending", None) or {}).get("step")
            execution, call, was_waiting = parent, _returned, False
            definition = definition_for_version(execution.version_id)
            continue
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
        savepoint = handler.savepoint(step)
        try:
            outcome = _run_step(handler, rt, call, savepoint=savepoint)
        except StepFailure as exc:
            error = str(exc)
        except DatabaseError:
            if not savepoint:
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
        call = step_run
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
            state.pending.append(
                PendingWork(
                    execution_id=execution.pk,
                    kind=outcome.kind,
                    seq=outcome.state["seq"],
                    until=outcome.until,
                )
            )
            return True
        if isinstance(outcome, Call):
            child = _call_begin(
                state, execution, step_id, outcome.workflow, was_waiting=was_waiting
            )
            if child is None:
                return True
            execution, was_waiting = child, False
            definition = definition_for_version(execution.version_id)
            step_id = definition["start"]
            continue
        if isinstance(outcome, Jump):
            target = workflow_target(execution.project_id, outcome.workflow)
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
            inherited = {
                key: execution.context[key]
                for key in ("return_to", "call_depth")
                if key in execution.context
            }
            execution = _execution_create(
                state, target["id"], target["published_version_id"], extra=inherited
            )
            definition = definition_for_version(execution.version_id)
            step_id = definition["start"]
            was_waiting = False
            continue
        raise TypeError(f"unknown outcome {outcome!r}")


def step_run(handler: StepType, rt: StepRuntime) -> Outcome:
    """How :func:`drive` enters a step that is not resumed: run it."""
    return handler.run(rt)


def _execution_create(
    state: RunState,
    workflow_id: int,
    version_id: int,
    trigger: dict | None = None,
    *,
    extra: dict | None = None,
) -> WorkflowExecution:
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
        context={"seq": 0, **({"trigger": trigger} if trigger else {}), **(extra or {})},
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


def execution_start(
    state: RunState, *, workflow_id: int, version_id: int, trigger: dict | None = None
) -> WorkflowExecution:
    """Start a new execution of a workflow's published version and run it.

    ``trigger`` is what its steps read as ``trigger.text`` and ``trigger.match``.
    """
    execution = _execution_create(state, workflow_id, version_id, trigger)
    definition = definition_for_version(execution.version_id)
    drive(
        state,
        execution,
        definition,
        definition["start"],
        step_run,
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
        step_run,
        was_waiting=True,
        log_input={"event": "timeout", "step": wait.get("step", "")},
    )
