"""Workflow services: process an event, publish and restore versions, continue
executions after timers, import and export workflow files.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.module_loading import import_string

from botplatform import batchscope
from botplatform.cache import WORKFLOW_VERSION_TTL, workflow_version_key, workflow_waiting_key
from users.selectors import user_state_prefetched, user_state_read
from workflows.engine.definition import definition_checksum
from workflows.engine.events import AnswerCallback, EngineResult, InputEvent
from workflows.engine.runner import (
    RunState,
    _cache_set,
    execution_cancel,
    execution_continue,
    execution_resume,
    execution_start,
    execution_time_out,
    session_lock,
    waiting_get,
)
from workflows.engine.triggers import (
    trigger_candidates,
    trigger_candidates_invalidate,
    trigger_match,
)
from workflows.engine.validation import WorkflowValidationError, workflow_validate
from workflows.models import Workflow, WorkflowExecution, WorkflowVersion

if TYPE_CHECKING:
    from botplatform.models import Bot
    from users.models import BotUser

logger = logging.getLogger(__name__)
Status = WorkflowExecution.Status

FILE_FORMAT = 1

__all__ = ["WorkflowValidationError", "event_process", "workflow_publish"]


def session_key_default(*, bot: Bot | None, user: BotUser) -> str:
    return session_key_for_chat(bot_id=bot.pk if bot else None, chat_id=user.chat_id)


def session_key_for_chat(*, bot_id: int | None, chat_id: int) -> str:
    """One conversation per bot and chat (``sim`` for the admin's simulator)."""
    return f"{bot_id if bot_id is not None else 'sim'}:{chat_id}"


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
        state = RunState(user=user, bot=bot, session_key=session_key, event=event)
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
        state.flush()
    actions = state.actions
    if event.kind == "callback" and not any(isinstance(a, AnswerCallback) for a in actions):
        actions.insert(0, AnswerCallback(callback_query_id=event.callback_query_id))
    return EngineResult(actions=actions, handled=handled)


def _start(state: RunState, match, waiting: WorkflowExecution | None) -> None:
    if waiting is not None and waiting.status == Status.WAITING:
        execution_cancel(state, waiting, f"interrupted: the user started '{match.slug}'")
    execution_start(state, workflow_id=match.workflow_id, version_id=match.version_id)


def _dispatch(state: RunState, waiting: WorkflowExecution | None) -> bool:
    event = state.event
    if event.kind == "callback" and event.callback_data.startswith("w:"):
        return _press(state, waiting)
    if event.kind == "timer":
        return False
    match = trigger_match(trigger_candidates(state.user.project_id), event)
    if event.kind == "command" and match is not None and match.interrupt:
        _start(state, match, waiting)
        return True
    if (
        waiting is not None
        and event.kind in {"text", "command"}
        and execution_resume(state, waiting)
    ):
        return True
    if match is not None:
        _start(state, match, waiting)
        return True
    return False


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
    deliver = import_string(settings.WORKFLOW_ACTION_DELIVERY)
    deliver(bot_id=bot_id, chat_id=chat_id, actions=actions)


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
        user=execution.user, bot=execution.bot, session_key=execution.session_key, event=event
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
    background work). Actions go out through ``WORKFLOW_ACTION_DELIVERY`` after commit.
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
        execution_continue(state, execution, data)
        _level_ups(state)
        state.flush()
        bot_id, chat_id, actions = execution.bot_id, execution.user.chat_id, state.actions
    _deliver(bot_id=bot_id, chat_id=chat_id, actions=actions)
    return True


def execution_expire(*, execution_id: int) -> bool:
    """Time out a wait for the user whose ``wait_until`` has passed. Idempotent."""
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
        execution_time_out(state, execution)
        _level_ups(state)
        state.flush()
        bot_id, chat_id, actions = execution.bot_id, execution.user.chat_id, state.actions
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


def http_pending_claim(*, execution_id: int, seq: int, budget_seconds: float) -> dict | None:
    """Claim the right to perform a pending request: push its deadline forward.

    A conditional UPDATE, so two workers (a retried task and the sweep) never both
    run the same request at once. Returns the request to perform, or None.
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
    claimed = WorkflowExecution.objects.filter(
        pk=execution_id, status=Status.RUNNING, wait_until=execution["wait_until"]
    ).update(wait_until=timezone.now() + timedelta(seconds=budget_seconds))
    return pending.get("request") if claimed else None


# --- Publishing -------------------------------------------------------------------


def _known_workflows(project_id: int) -> set[str]:
    return set(Workflow.objects.filter(project_id=project_id).values_list("slug", flat=True))


def workflow_validate_for(*, workflow: Workflow, definition: dict | None = None) -> None:
    """Validate a definition (the draft by default) in its project's context."""
    workflow_validate(
        workflow.draft if definition is None else definition,
        triggers=workflow.triggers,
        known_workflows=_known_workflows(workflow.project_id),
    )


def _version_cache_write(version: WorkflowVersion, project_id: int) -> None:
    info = {"id": version.pk, "number": version.number, "definition": version.definition}
    key = workflow_version_key(project_id, version.workflow_id)
    transaction.on_commit(lambda: _cache_set(key, info, WORKFLOW_VERSION_TTL))


def _version_publish(
    *, workflow: Workflow, definition: dict, published_by, note: str
) -> WorkflowVersion:
    locked = Workflow.objects.select_for_update().get(pk=workflow.pk)
    current = locked.published_version
    checksum = definition_checksum(definition)
    if current is not None and current.checksum == checksum:
        return current
    number = (locked.versions.aggregate(top=Max("number"))["top"] or 0) + 1
    version = WorkflowVersion.objects.create(
        workflow=locked,
        number=number,
        definition=definition,
        checksum=checksum,
        published_by=published_by,
        note=note[:500],
    )
    locked.published_version = version
    locked.save(update_fields=["published_version", "updated_at"])
    workflow.published_version = version
    _version_cache_write(version, locked.project_id)
    return version


def workflow_publish(
    *, workflow: Workflow, published_by=None, definition: dict | None = None, note: str = ""
) -> WorkflowVersion:
    """Validate and publish: new conversations start on the new version.

    Conversations in flight stay on the version they started with. Publishing the
    same definition twice returns the current version instead of a duplicate.
    Raises :class:`WorkflowValidationError` listing every problem by step.
    """
    definition = workflow.draft if definition is None else definition
    workflow_validate_for(workflow=workflow, definition=definition)
    with transaction.atomic():
        if definition is not workflow.draft:
            workflow.draft = definition
            workflow.save(update_fields=["draft", "updated_at"])
        return _version_publish(
            workflow=workflow, definition=definition, published_by=published_by, note=note
        )


def workflow_restore_version(*, version: WorkflowVersion, restored_by=None) -> WorkflowVersion:
    """Make an earlier version live again (as a new version, so history stays linear)."""
    workflow = version.workflow
    with transaction.atomic():
        workflow.draft = version.definition
        workflow.save(update_fields=["draft", "updated_at"])
        return _version_publish(
            workflow=workflow,
            definition=version.definition,
            published_by=restored_by,
            note=f"restored from version {version.number}",
        )


# --- Files -------------------------------------------------------------------------


def workflow_export(*, workflow: Workflow) -> dict[str, Any]:
    """The workflow as a file (see docs/workflows.md): draft definition and triggers."""
    return {
        "format": FILE_FORMAT,
        "slug": workflow.slug,
        "name": workflow.name,
        "description": workflow.description,
        "priority": workflow.priority,
        "is_active": workflow.is_active,
        "triggers": workflow.triggers,
        "definition": workflow.draft,
    }


def workflow_import(
    *, project_id: int, data: dict, publish: bool = False, published_by=None
) -> tuple[Workflow, WorkflowVersion | None]:
    """Create or update (by slug) a workflow from a file; optionally publish it.

    All or nothing: with ``publish`` an invalid definition raises
    :class:`WorkflowValidationError` and nothing is written.
    """
    if not isinstance(data, dict) or not isinstance(data.get("slug"), str) or not data["slug"]:
        raise WorkflowValidationError([_file_error("the file needs a 'slug'")])
    if data.get("format", FILE_FORMAT) != FILE_FORMAT:
        raise WorkflowValidationError([_file_error(f"unsupported format {data.get('format')}")])
    if "definition" not in data:
        raise WorkflowValidationError([_file_error("the file needs a 'definition'")])
    with transaction.atomic():
        workflow, _ = Workflow.objects.select_for_update().get_or_create(
            project_id=project_id,
            slug=data["slug"],
            defaults={"name": data.get("name") or data["slug"]},
        )
        workflow.name = data.get("name") or workflow.name
        workflow.description = data.get("description", workflow.description) or ""
        workflow.priority = int(data.get("priority", workflow.priority) or 0)
        workflow.is_active = bool(data.get("is_active", True))
        workflow.triggers = data.get("triggers") or []
        workflow.draft = data["definition"]
        workflow.save(
            update_fields=[
                "name",
                "description",
                "priority",
                "is_active",
                "triggers",
                "draft",
                "updated_at",
            ]
        )
        version = (
            workflow_publish(workflow=workflow, published_by=published_by) if publish else None
        )
    return workflow, version


def _file_error(message: str):
    from workflows.engine.validation import StepError

    return StepError("", message)


# --- Admin: operators' actions ------------------------------------------------------


class DraftConflict(Exception):
    """The draft changed since the operator opened it; their edit was not saved."""


def workflow_draft_save(
    *, workflow: Workflow, definition: dict, triggers: list, expected_updated_at=None
) -> None:
    """Store an edited draft and triggers (a draft may be unfinished; publish checks it).

    Triggers take effect at once, so they must be valid to be saved at all. With
    ``expected_updated_at`` the write is a conditional UPDATE: if someone saved the
    workflow in the meantime, nothing is written and :class:`DraftConflict` is raised,
    so two operators never silently overwrite each other.
    """
    from workflows.engine.validation import triggers_problems

    problems = triggers_problems(triggers)
    if problems:
        raise WorkflowValidationError(problems)
    rows = Workflow.objects.filter(pk=workflow.pk)
    if expected_updated_at is not None:
        rows = rows.filter(updated_at=expected_updated_at)
    now = timezone.now()
    if not rows.update(draft=definition, triggers=triggers, updated_at=now):
        raise DraftConflict("the workflow was changed by someone else since it was opened")
    workflow.draft, workflow.triggers, workflow.updated_at = definition, triggers, now
    # A queryset UPDATE sends no post_save: drop the cached trigger table here.
    trigger_candidates_invalidate(project_id=workflow.project_id)


def workflow_preview_version(*, workflow: Workflow, created_by=None) -> WorkflowVersion:
    """The draft as a preview version (number 0, never live) for the chat simulator.

    Validated like a publish; an unchanged draft reuses its preview, so trying the
    same draft twice creates nothing new. Raises :class:`WorkflowValidationError`.
    """
    workflow_validate_for(workflow=workflow)
    checksum = definition_checksum(workflow.draft)
    existing = WorkflowVersion.objects.filter(
        workflow=workflow, is_preview=True, checksum=checksum
    ).first()
    if existing is not None:
        return existing
    return WorkflowVersion.objects.create(
        workflow=workflow,
        number=0,
        definition=workflow.draft,
        checksum=checksum,
        published_by=created_by,
        note="draft preview (chat simulator)",
        is_preview=True,
    )


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
        state.flush()
    return state.actions


def execution_cancel_by_operator(*, execution_id: int, reason: str = "") -> bool:
    """Cancel a waiting (or paused) execution; its buttons become stale. Idempotent."""
    with transaction.atomic():
        execution = _locked_execution(execution_id)
        if execution is None or execution.status not in {Status.WAITING, Status.RUNNING}:
            return False
        state = _background_state(execution, InputEvent(kind="timer"))
        execution_cancel(state, execution, reason or "cancelled by an operator")
        state.flush()
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
        from workflows.engine.runner import _call_run, definition_for_version, drive

        definition = definition_for_version(execution.version_id)
        drive(
            state,
            execution,
            definition,
            execution.current_step or definition["start"],
            _call_run,
            log_input={"event": "retry", "attempt": retries},
        )
        _level_ups(state)
        state.flush()
        bot_id, chat_id, actions = execution.bot_id, execution.user.chat_id, state.actions
    _deliver(bot_id=bot_id, chat_id=chat_id, actions=actions)
    return True
