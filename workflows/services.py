"""Workflow services: process an event, continue executions after timers, start a
workflow for a user, operators' actions on executions; each through the one
:func:`conversation_session`.

Drafts, publishing, restoring and workflow files live in ``workflows.publishing``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from botplatform.cache import workflow_waiting_key
from botplatform.conversation import ANSWER_KINDS, AnswerCallback, InputEvent
from botplatform.languages import system_text, user_language
from botplatform.locks import session_lock
from botplatform.queueing import task_named
from users.selectors import user_state_read
from workflows.delivery import actions_deliver
from workflows.engine.batch import Batch, session_lock_once
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
from workflows.engine.triggers import trigger_candidates, trigger_match, trigger_matches_all
from workflows.engine.version_cache import definition_for_version
from workflows.engine.waiting import waiting_get
from workflows.models import Workflow, WorkflowExecution, WorkflowVersion

if TYPE_CHECKING:
    from botplatform.models import Bot
    from users.models import BotUser

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


# --- One conversation, locked: every entry point below goes through this ---------


@dataclass
class Conversation:
    """What the body of a :func:`conversation_session` works on."""

    batch: Batch | None = None
    # The run state; a background entry point creates it with :meth:`background`.
    state: RunState | None = None
    # By session key: the execution waiting for the session's next input (row-locked).
    waiting: WorkflowExecution | None = None
    # By execution id: that execution, row-locked (None when it does not exist).
    execution: WorkflowExecution | None = None

    def background(self, event: InputEvent) -> RunState:
        """The run state of a background event (timer, result, timeout, operator) on
        :attr:`execution`, with the session's waiting execution as the database says."""
        self.state = _background_state(self.execution, event)
        return self.state


@contextmanager
def conversation_session(
    *,
    session_key: str | None = None,
    execution_id: int | None = None,
    user: BotUser | None = None,
    bot: Bot | None = None,
    event: InputEvent | None = None,
    chat: int | None = None,
    read_state: bool = False,
    batch: Batch | None = None,
    deliver: bool = False,
) -> Iterator[Conversation]:
    """The one sequence of every entry point: lock → state → waiting → (the body runs
    the engine) → level-ups → flush → deliver.

    One transaction holding the session's advisory lock (unless ``batch`` holds it
    already). By ``session_key`` (an event, an operator's start): the run state of
    ``user``/``bot``/``event`` and the session's waiting execution are ready for the
    body; ``read_state`` reads the waiting id and the user's state in one cache round
    trip. By ``execution_id`` (timers, results, timeouts, operators' actions): the
    execution is row-locked after its session's lock and the body calls
    :meth:`Conversation.background` once it decides to act. When the body ends
    normally (also by ``return``), ``level_up`` workflows start, logs are written and
    background work is queued after commit (:func:`_finish`); with ``deliver`` the
    actions go out through ``workflows.delivery`` after commit. In a batch an error
    rolls the whole batch back (it is then handled update by update), so no savepoint
    is needed: two statements saved per update.
    """
    conversation = Conversation(batch=batch)
    with transaction.atomic(savepoint=batch is None):
        if execution_id is not None:
            conversation.execution = _locked_execution(execution_id)
        else:
            session_lock_once(batch, session_key)
            conversation.state = RunState(
                user=user, bot=bot, session_key=session_key, event=event, chat=chat, batch=batch
            )
            conversation.waiting = _waiting_read(conversation.state, read_state=read_state)
        yield conversation
        state = conversation.state
        if state is not None:
            _level_ups(state)
            _finish(state)
    if deliver and state is not None and state.actions:
        bot_id = state.bot.pk if state.bot is not None else None
        actions_deliver(bot_id=bot_id, chat_id=state.chat_id, actions=state.actions)


def _waiting_read(state: RunState, *, read_state: bool) -> WorkflowExecution | None:
    """The session's waiting execution (row-locked); with ``read_state`` in the same
    cache round trip as the user's state, which primes the run state's user data."""
    session_key, batch = state.session_key, state.batch
    if not read_state:
        waiting = waiting_get(session_key, batch=batch)
        state.waiting_id = waiting.pk if waiting else None
        return waiting
    user = state.user
    ahead = batch.users if batch is not None else None
    waiting_key = workflow_waiting_key(session_key)
    # Never raises: an unreachable Redis reads as a miss (botplatform/cache_backend.py).
    fetched = user_state_read(
        user_id=user.pk, project_id=user.project_id, extra_keys=[waiting_key], ahead=ahead
    )
    waiting = waiting_get(session_key, cached=fetched.get(waiting_key), batch=batch)
    if waiting is not None and fetched.get(waiting_key) == waiting.pk:
        state.waiting_cached_id = waiting.pk
    state.data.prime(fetched, ahead)
    state.waiting_id = waiting.pk if waiting else None
    return waiting


# --- Events -------------------------------------------------------------------


def event_process(
    *,
    user: BotUser,
    event: InputEvent,
    bot: Bot | None = None,
    session_key: str | None = None,
    batch: Batch | None = None,
) -> EngineResult:
    """Decide what one incoming event does and return the actions to perform.

    Serialised per session: the whole decision runs in one transaction holding the
    session's advisory lock, with the waiting execution row-locked, so a double tap
    or two workers never resume the same wait twice. Every callback gets an answer.
    ``batch``: the batch the event belongs to (``workflows/handler.py``), or None.
    """
    session_key = session_key or session_key_default(bot=bot, user=user)
    with conversation_session(
        session_key=session_key,
        user=user,
        bot=bot,
        event=event,
        chat=session_chat_id(session_key),
        read_state=True,
        batch=batch,
    ) as conversation:
        handled = _dispatch(conversation.state, conversation.waiting)
    actions = conversation.state.actions
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
    execution_start(
        state, workflow_id=match.workflow_id, version_id=match.version_id, trigger=match.trigger
    )


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
    user = state.user
    language = user_language(
        user.language, user.language_code, project.language_list, project.default_language
    )
    return system_text(project.stale_button_message, language)


def _level_ups(state: RunState) -> None:
    """A bonus step moved the user up a level: start ``level_up`` workflows."""
    for level in state.level_ups:
        event = InputEvent(kind="level_up", payload=level, event_id=f"level_up:{level}")
        # Every level_up workflow starts (by priority), as the docs say.
        for match in trigger_matches_all(trigger_candidates(state.user.project_id), event):
            state.event = event
            execution_start(
                state,
                workflow_id=match.workflow_id,
                version_id=match.version_id,
                trigger=match.trigger,
            )
    state.level_ups = []


# --- Timers, background results, timeouts ----------------------------------------------


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
    with conversation_session(execution_id=execution_id, deliver=True) as conversation:
        execution = conversation.execution
        if execution is None or execution.status != Status.RUNNING:
            return False
        pending = execution.context.get("pending") or {}
        if pending.get("seq") != seq:
            return False
        now = timezone.now()
        if not force and pending.get("kind") == "delay" and execution.wait_until > now:
            return False
        event = InputEvent(kind="timer", event_id=f"timer:{execution_id}:{seq}")
        state = conversation.background(event)
        if execution_superseded(state, execution):
            return False
        execution_continue(state, execution, data)
    return True


def execution_expire(*, execution_id: int) -> bool:
    """Time out a wait for the user whose ``wait_until`` has passed. Idempotent.

    Like a delay, a timeout continues only the session's newest conversation.
    """
    with conversation_session(execution_id=execution_id, deliver=True) as conversation:
        execution = conversation.execution
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
        state = conversation.background(event)
        if execution_superseded(state, execution):
            return False
        execution_time_out(state, execution)
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
    with conversation_session(execution_id=execution_id) as conversation:
        execution = conversation.execution
        if execution is None or execution.status != Status.RUNNING:
            return False
        return execution_superseded(conversation.background(InputEvent(kind="timer")), execution)


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
    with conversation_session(
        session_key=session_key, user=user, bot=bot, event=event
    ) as conversation:
        state, waiting = conversation.state, conversation.waiting
        if waiting is not None:
            execution_cancel(state, waiting, f"interrupted: '{workflow['slug']}' was started")
        execution_start(state, workflow_id=workflow_id, version_id=workflow["published_version_id"])
    return state.actions


def execution_cancel_by_operator(*, execution_id: int, reason: str = "") -> bool:
    """Cancel a waiting (or paused) execution; its buttons become stale. Idempotent."""
    with conversation_session(execution_id=execution_id) as conversation:
        execution = conversation.execution
        if execution is None or execution.status not in {Status.WAITING, Status.RUNNING}:
            return False
        state = conversation.background(InputEvent(kind="timer"))
        execution_cancel(state, execution, reason or "cancelled by an operator")
    return True


def execution_retry(*, execution_id: int) -> bool:
    """Run a failed execution again from the step that failed (same version).

    The step's operations get a fresh event id, so a bonus step that failed before
    applying anything is applied now, once. Returns False unless it was failed.
    """
    with conversation_session(execution_id=execution_id, deliver=True) as conversation:
        execution = conversation.execution
        if execution is None or execution.status != Status.FAILED:
            return False
        retries = int(execution.context.get("retries", 0)) + 1
        execution.context["retries"] = retries
        event = InputEvent(kind="timer", event_id=f"retry:{execution_id}:{retries}")
        state = conversation.background(event)
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
    return True
