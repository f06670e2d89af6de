"""Workflow services: process an event, continue executions after timers, start a
workflow for a user, operators' actions on executions.

Drafts, publishing, restoring and workflow files live in ``workflows.publishing``
(re-exported here for existing callers).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from datetime import timedelta
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from botplatform import batchscope
from botplatform.cache import workflow_waiting_key
from botplatform.conversation import ANSWER_KINDS, AnswerCallback, InputEvent
from botplatform.locks import session_lock
from botplatform.queueing import task_named
from users.selectors import user_state_prefetched, user_state_read
from workflows.delivery import actions_deliver
from workflows.engine.events import EngineResult
from workflows.engine.execution import (
    RunState,
    drive,
    execution_cancel,
    execution_continue,
    execution_resume,
    execution_start,
    execution_superseded,
    execution_time_out,
    session_unfinished_cancel,
    step_run,
)
from workflows.engine.triggers import trigger_candidates, trigger_match
from workflows.engine.validation import WorkflowValidationError
from workflows.engine.version_cache import definition_for_version
from workflows.engine.waiting import waiting_get
from workflows.models import Workflow, WorkflowExecution, WorkflowVersion
from workflows.publishing import (  # noqa: F401 - re-exported for existing callers
    DraftConflict,
    workflow_draft_save,
    workflow_export,
    workflow_import,
    workflow_preview_version,
    workflow_publish,
    workflow_restore_version,
    workflow_validate_for,
)

if TYPE_CHECKING:
    from botplatform.models import Bot
    from users.models import BotUser

logger = logging.getLogger(__name__)
Status = WorkflowExecution.Status

# Delays up to this long also get an ETA task; longer ones rely on the sweep only (a
# broker holding ETA tasks for days redelivers them after its visibility timeout).
DELAY_TASK_MAX_SECONDS = 3000


def _finish(state: RunState) -> None:
    """End an event's work: write its step logs, and queue the background work its steps
    recorded (HTTP calls, short delays) once the transaction commits; the engine
    schedules nothing itself. Queueing is by task name: the tasks module imports this
    one. A long delay gets no task: the sweep continues it when it is due."""
    state.flush()
    for work in state.pending:
        if work.kind == "http":
            task, options = "workflows.tasks.http_request_run", {}
        elif (work.until - timezone.now()).total_seconds() <= DELAY_TASK_MAX_SECONDS:
            task, options = "workflows.tasks.delay_continue", {"eta": work.until}
        else:
            continue
        transaction.on_commit(
            lambda task=task, work=work, options=options: task_named(task).apply_async(
                (work.execution_id, work.seq), **options
            )
        )
    state.pending = []


__all__ = ["WorkflowValidationError", "event_process", "workflow_publish"]


GROUP_CHAT_TYPES = frozenset({"group", "supergroup"})


def session_key_default(*, bot: Bot | None, user: BotUser) -> str:
    return session_key_for_chat(bot_id=bot.pk if bot else None, chat_id=user.chat_id)


def session_key_for_chat(
    *,
    bot_id: int | None,
    chat_id: int,
    chat_type: str = "private",
    telegram_id: int | None = None,
) -> str:
    """The session (conversation) an update belongs to; every transport builds it here.

    One per bot and chat (``sim`` for the admin's simulator); in a group or
    supergroup one per member (``bot:chat:member``), so one member can neither
    answer nor press the buttons of another member's conversation. A private chat
    keeps the ``bot:chat`` form.
    """
    key = f"{bot_id if bot_id is not None else 'sim'}:{chat_id}"
    if chat_type in GROUP_CHAT_TYPES and telegram_id is not None:
        return f"{key}:{telegram_id}"
    return key


def session_chat_id(session_key: str) -> int | None:
    """The chat a session's messages go to (the second part of its key)."""
    try:
        return int(session_key.split(":")[1])
    except (IndexError, ValueError):
        return None


# --- Events -------------------------------------------------------------------


def event_process(
    *,
    user: BotUser,
    event: InputEvent,
    bot: Bot | None = None,
    session_key: str | None = None,
) -> EngineResult:
    """Decide what one incoming event does and return the actions to perform.

    Serialised per session: the whole decision runs in one transaction holding the
    session's advisory lock, with the waiting execution row-locked, so a double tap
    or two workers never resume the same wait twice. Every callback gets an answer.
    """
    session_key = session_key or session_key_default(bot=bot, user=user)
    # In a batch an error rolls the whole batch back (it is then handled update by
    # update), so no savepoint is needed: two statements saved per update.
    with transaction.atomic(savepoint=batchscope.current() is None):
        session_lock(session_key)
        state = RunState(
            user=user,
            bot=bot,
            session_key=session_key,
            event=event,
            chat=session_chat_id(session_key),
        )
        # One round trip for the wait and the user's state (read later, lazily).
        waiting_key = workflow_waiting_key(session_key)
        try:
            fetched = user_state_read(
                user_id=user.pk, project_id=user.project_id, extra_keys=[waiting_key]
            )
        except Exception:
            logger.warning("cache read for session %s failed", session_key, exc_info=True)
            fetched = None
        if fetched is None:
            waiting = waiting_get(session_key)
            prefetched = nullcontext()
        else:
            waiting = waiting_get(session_key, cached=fetched.get(waiting_key))
            if waiting is not None and fetched.get(waiting_key) == waiting.pk:
                state.waiting_cached_id = waiting.pk
            prefetched = user_state_prefetched(
                user_id=user.pk, project_id=user.project_id, values=fetched
            )
        state.waiting_id = waiting.pk if waiting else None
        with prefetched:
            handled = _dispatch(state, waiting)
            _level_ups(state)
        _finish(state)
    actions = state.actions
    if event.kind == "callback" and not any(isinstance(a, AnswerCallback) for a in actions):
        actions.insert(0, AnswerCallback(callback_query_id=event.callback_query_id))
    return EngineResult(actions=actions, handled=handled)


def _start(state: RunState, match, waiting: WorkflowExecution | None) -> None:
    """Start the matched workflow: it becomes the session's newest conversation.

    The waiting conversation is cancelled; an interrupting trigger also cancels the
    paused ones (a delay, an HTTP request), see docs/workflows.md.
    """
    reason = f"interrupted: the user started '{match.slug}'"
    if match.interrupt:
        session_unfinished_cancel(state, reason, waiting=waiting)
    elif waiting is not None and waiting.status == Status.WAITING:
        execution_cancel(state, waiting, reason)
    execution_start(state, workflow_id=match.workflow_id, version_id=match.version_id)


def _dispatch(state: RunState, waiting: WorkflowExecution | None) -> bool:
    event = state.event
    if event.kind == "callback" and event.callback_data.startswith("w:"):
        return _press(state, waiting)
    if event.kind == "timer":
        return False
    if event.kind in {"pre_checkout", "payment"}:
        return _payment_event(state, waiting)
    match = trigger_match(trigger_candidates(state.user.project_id), event)
    if event.kind == "command" and match is not None and match.interrupt:
        _start(state, match, waiting)
        return True
    if waiting is not None and event.kind in ANSWER_KINDS and execution_resume(state, waiting):
        return True
    if match is not None:
        _start(state, match, waiting)
        return True
    return False


def _payment_event(state: RunState, waiting: WorkflowExecution | None) -> bool:
    """A pre-checkout query is answered at once; a payment is recorded (and its bonus
    credited) once per charge, then continues the invoice step that waits for it."""
    from workflows import payments

    event = state.event
    if event.kind == "pre_checkout":
        state.actions.append(payments.pre_checkout_decide(user=state.user, event=event))
        return True
    _payment, credit = payments.payment_record(user=state.user, bot=state.bot, event=event)
    if credit is not None and credit.status == "ok" and not credit.replayed:
        state.data.balance_update(balance=credit.balance, level=credit.new_level)
        if credit.new_level:
            state.level_ups.append(credit.new_level)
    if waiting is not None:
        execution_resume(state, waiting)
    return True


def _press(state: RunState, waiting: WorkflowExecution | None) -> bool:
    """A step button: resume if it belongs to the current wait, else say it is stale."""
    event = state.event
    try:
        _, execution_id, seq, _index = event.callback_data.split(":")
        execution_id, seq = int(execution_id), int(seq)
    except ValueError:
        execution_id, seq = 0, -1
    wait = (waiting.context.get("wait") or {}) if waiting else {}
    if (
        waiting is not None
        and waiting.pk == execution_id
        and wait.get("kind") == "buttons"
        and wait.get("seq") == seq
        and execution_resume(state, waiting)
    ):
        return True
    state.actions.append(
        AnswerCallback(callback_query_id=event.callback_query_id, text=_stale_button_text(state))
    )
    return True


def _stale_button_text(state: RunState) -> str:
    """The project's own wording (the bot's project is loaded already; the simulator's
    test user fetches it: a stale press is rare)."""
    project = state.bot.project if state.bot is not None else state.user.project
    return project.stale_button_message


def _level_ups(state: RunState) -> None:
    """A bonus step moved the user up a level: start ``level_up`` workflows."""
    for level in state.level_ups:
        event = InputEvent(kind="level_up", payload=level, event_id=f"level_up:{level}")
        match = trigger_match(trigger_candidates(state.user.project_id), event)
        if match is None:
            continue
        state.event = event
        execution_start(state, workflow_id=match.workflow_id, version_id=match.version_id)
    state.level_ups = []


# --- Timers, background results, timeouts ----------------------------------------------


def _deliver(*, bot_id: int | None, chat_id: int, actions: list) -> None:
    if not actions:
        return
    actions_deliver(bot_id=bot_id, chat_id=chat_id, actions=actions)


def _locked_execution(execution_id: int) -> WorkflowExecution | None:
    """Take the session lock, then the row (the same order as :func:`event_process`)."""
    session_key = (
        WorkflowExecution.objects.filter(pk=execution_id)
        .values_list("session_key", flat=True)
        .first()
    )
    if session_key is None:
        return None
    session_lock(session_key)
    return (
        WorkflowExecution.objects.select_for_update(of=("self",))
        .select_related("user", "bot")
        .filter(pk=execution_id)
        .first()
    )


def _background_state(execution: WorkflowExecution, event: InputEvent) -> RunState:
    state = RunState(
        user=execution.user,
        bot=execution.bot,
        session_key=execution.session_key,
        event=event,
        chat=session_chat_id(execution.session_key),
    )
    state.waiting_id = (
        WorkflowExecution.objects.filter(session_key=execution.session_key, status=Status.WAITING)
        .values_list("pk", flat=True)
        .first()
    )
    return state


def execution_timer_fire(
    *, execution_id: int, seq: int, data: dict | None = None, force: bool = False
) -> bool:
    """Continue an execution paused on a delay or HTTP step. Idempotent.

    Does nothing unless the execution still waits on that very pause (``seq``) and,
    for a delay, the due time has come (``force`` skips that check for results of
    background work). A conversation the user has moved on from (a newer one of the
    session is unfinished) ends quietly instead (:func:`execution_superseded`). All
    under the session lock and the row lock, so a retried task continues nothing
    twice. Actions go out through ``workflows.delivery`` after commit.
    """
    with transaction.atomic():
        execution = _locked_execution(execution_id)
        if execution is None or execution.status != Status.RUNNING:
            return False
        pending = execution.context.get("pending") or {}
        if pending.get("seq") != seq:
            return False
        now = timezone.now()
        if not force and pending.get("kind") == "delay" and execution.wait_until > now:
            return False
        event = InputEvent(kind="timer", event_id=f"timer:{execution_id}:{seq}")
        state = _background_state(execution, event)
        if execution_superseded(state, execution):
            return False
        execution_continue(state, execution, data)
        _level_ups(state)
        _finish(state)
        bot_id, chat_id, actions = execution.bot_id, state.chat_id, state.actions
    _deliver(bot_id=bot_id, chat_id=chat_id, actions=actions)
    return True


def execution_expire(*, execution_id: int) -> bool:
    """Time out a wait for the user whose ``wait_until`` has passed. Idempotent.

    Like a delay, a timeout continues only the session's newest conversation.
    """
    with transaction.atomic():
        execution = _locked_execution(execution_id)
        now = timezone.now()
        if (
            execution is None
            or execution.status != Status.WAITING
            or execution.wait_until is None
            or execution.wait_until > now
        ):
            return False
        event = InputEvent(
            kind="timer", event_id=f"timeout:{execution_id}:{int(execution.wait_until.timestamp())}"
        )
        state = _background_state(execution, event)
        if execution_superseded(state, execution):
            return False
        execution_time_out(state, execution)
        _level_ups(state)
        _finish(state)
        bot_id, chat_id, actions = execution.bot_id, state.chat_id, state.actions
    _deliver(bot_id=bot_id, chat_id=chat_id, actions=actions)
    return True


def executions_due(*, limit: int = 500) -> tuple[list[int], list[tuple[int, int, str]]]:
    """(waiting executions past their timeout, [(id, seq, kind)] of overdue pauses)."""
    now = timezone.now()
    expired = list(
        WorkflowExecution.objects.filter(status=Status.WAITING, wait_until__lte=now)
        .order_by("wait_until")
        .values_list("pk", flat=True)[:limit]
    )
    overdue = [
        (
            pk,
            int((context.get("pending") or {}).get("seq", -1)),
            (context.get("pending") or {}).get("kind", ""),
        )
        for pk, context in WorkflowExecution.objects.filter(
            status=Status.RUNNING, wait_until__lte=now
        )
        .order_by("wait_until")
        .values_list("pk", "context")[:limit]
    ]
    return expired, overdue


def _superseded_end(execution_id: int) -> bool:
    """End a paused execution the user has moved on from (see execution_superseded)."""
    with transaction.atomic():
        execution = _locked_execution(execution_id)
        if execution is None or execution.status != Status.RUNNING:
            return False
        return execution_superseded(
            _background_state(execution, InputEvent(kind="timer")), execution
        )


def http_pending_claim(*, execution_id: int, seq: int, budget_seconds: float) -> dict | None:
    """Claim the right to perform a pending request: push its deadline forward.

    A conditional UPDATE, so two workers (a retried task and the sweep) never both
    run the same request at once. Returns the request to perform, or None. A request
    of a conversation the user has moved on from is not sent: the execution ends.
    """
    execution = (
        WorkflowExecution.objects.filter(pk=execution_id, status=Status.RUNNING)
        .values("context", "wait_until")
        .first()
    )
    if execution is None:
        return None
    pending = execution["context"].get("pending") or {}
    if pending.get("seq") != seq or pending.get("kind") != "http":
        return None
    if _superseded_end(execution_id):
        return None  # the user moved on: the request is not sent at all
    claimed = WorkflowExecution.objects.filter(
        pk=execution_id, status=Status.RUNNING, wait_until=execution["wait_until"]
    ).update(wait_until=timezone.now() + timedelta(seconds=budget_seconds))
    return pending.get("request") if claimed else None


# --- Admin: operators' actions ------------------------------------------------------


def workflow_start_for_user(
    *,
    user: BotUser,
    workflow_id: int,
    bot: Bot | None,
    session_key: str,
    event_id: str,
    version_id: int | None = None,
) -> list:
    """Start a workflow's published version (or ``version_id``) for one user.

    Used by the simulator ("start this workflow", "try the draft") and by broadcasts,
    whatever the workflow's triggers. Runs like an event: under the session lock,
    cancelling whatever waited in that chat; returns the actions for the caller to
    deliver.
    """
    workflow = (
        Workflow.objects.filter(pk=workflow_id, project_id=user.project_id)
        .values("published_version_id", "slug")
        .first()
    )
    if workflow is not None and version_id is not None:
        if not WorkflowVersion.objects.filter(pk=version_id, workflow_id=workflow_id).exists():
            raise ValueError("the version does not belong to the workflow")
        workflow["published_version_id"] = version_id
    if workflow is None or workflow["published_version_id"] is None:
        raise ValueError("the workflow is not published")
    event = InputEvent(kind="command", command="", event_id=event_id)
    with transaction.atomic():
        session_lock(session_key)
        state = RunState(user=user, bot=bot, session_key=session_key, event=event)
        waiting = waiting_get(session_key)
        state.waiting_id = waiting.pk if waiting else None
        if waiting is not None:
            execution_cancel(state, waiting, f"interrupted: '{workflow['slug']}' was started")
        execution_start(state, workflow_id=workflow_id, version_id=workflow["published_version_id"])
        _level_ups(state)
        _finish(state)
    return state.actions


def execution_cancel_by_operator(*, execution_id: int, reason: str = "") -> bool:
    """Cancel a waiting (or paused) execution; its buttons become stale. Idempotent."""
    with transaction.atomic():
        execution = _locked_execution(execution_id)
        if execution is None or execution.status not in {Status.WAITING, Status.RUNNING}:
            return False
        state = _background_state(execution, InputEvent(kind="timer"))
        execution_cancel(state, execution, reason or "cancelled by an operator")
        _finish(state)
    return True


def execution_retry(*, execution_id: int) -> bool:
    """Run a failed execution again from the step that failed (same version).

    The step's operations get a fresh event id, so a bonus step that failed before
    applying anything is applied now, once. Returns False unless it was failed.
    """
    with transaction.atomic():
        execution = _locked_execution(execution_id)
        if execution is None or execution.status != Status.FAILED:
            return False
        retries = int(execution.context.get("retries", 0)) + 1
        execution.context["retries"] = retries
        event = InputEvent(kind="timer", event_id=f"retry:{execution_id}:{retries}")
        state = _background_state(execution, event)
        execution.status = Status.RUNNING
        execution.error = ""
        execution.finished_at = None
        definition = definition_for_version(execution.version_id)
        drive(
            state,
            execution,
            definition,
            execution.current_step or definition["start"],
            step_run,
            log_input={"event": "retry", "attempt": retries},
        )
        _level_ups(state)
        _finish(state)
        bot_id, chat_id, actions = execution.bot_id, state.chat_id, state.actions
    _deliver(bot_id=bot_id, chat_id=chat_id, actions=actions)
    return True
