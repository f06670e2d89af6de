"""The chat simulator: an operator talks to a project's workflows as a test user.

The test user is a :class:`~users.models.BotUser` with ``is_test=True`` and a
negative Telegram id, so it can never be a real Telegram user (their ids are
positive) and real users' data is never touched. Events go through the very same
``event_process`` as Telegram updates, with ``bot=None``; what the engine answers is
written to a transcript (:class:`~workflows.models.SimulatorMessage`) instead of
being sent. Asynchronous answers (delays, HTTP steps, timeouts) reach the engine's
delivery (``workflows.delivery``) with ``bot_id=None``: :func:`simulator_routed`
sends those of test users to the transcript too, and everything else to Telegram.
"""

from __future__ import annotations

import html
import json
import logging
import re
import uuid
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from botplatform.conversation import (
    AnswerCallback,
    EditMessage,
    InputEvent,
    SendLocation,
    SendMedia,
    SendMessage,
)
from users.botusers import bot_user_language_set, bot_user_upsert
from users.invalidation import user_state_changed
from users.models import BotUser
from users.selectors import user_state_get
from workflows.delivery import Deliver
from workflows.engine.waiting import waiting_cache_clear
from workflows.models import SimulatorMessage, Workflow, WorkflowExecution
from workflows.publishing import workflow_preview_version
from workflows.services import event_process, session_key_default, workflow_start_for_user

logger = logging.getLogger(__name__)
Status = WorkflowExecution.Status

# Test users' ids: far below any Telegram chat id (groups are about -1.9e12).
SIMULATOR_ID_BASE = 10**15
OPERATORS_PER_PROJECT = 10**7
# Reset test users (kept for their ledger): far below the simulator's own ids.
ARCHIVED_ID_BASE = 9 * 10**17


def simulator_telegram_id(*, project_id: int, operator_id: int) -> int:
    """The test user's (negative, globally unique) Telegram and chat id."""
    return -(SIMULATOR_ID_BASE + project_id * OPERATORS_PER_PROJECT + operator_id)


def simulator_user_get(*, project_id: int, operator) -> BotUser:
    """The operator's test user in the project (created on first use)."""
    telegram_id = simulator_telegram_id(project_id=project_id, operator_id=operator.pk)
    existing = BotUser.objects.filter(project_id=project_id, telegram_id=telegram_id).first()
    if existing is not None:
        return existing
    # A new test user arrives like a real one: base level, welcome bonus.
    user, _ = bot_user_upsert(
        project_id=project_id,
        telegram_id=telegram_id,
        chat_id=telegram_id,
        first_name=operator.first_name or operator.get_username(),
        last_name="(test)",
        is_test=True,
    )
    return user


def simulator_catch_up() -> None:
    """Without a broker there is no beat: let the simulator page run the due sweep.

    In the zero-setup default (tasks in-process, nothing but ``runserver`` running) a
    delayed step would otherwise never come due in the simulator. The sweep is
    idempotent, so it is harmless next to a ``runbot`` that runs it too.
    """
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        return
    from workflows.tasks import executions_sweep

    executions_sweep()


def simulator_session_key(user: BotUser) -> str:
    return session_key_default(bot=None, user=user)


# --- Transcript -----------------------------------------------------------------


def _buttons_json(rows) -> list[list[dict]]:
    return [
        [{"text": b.text, "data": b.callback_data, "url": b.url} for b in row] for row in rows or ()
    ]


def _media_text(action) -> str:
    """How the simulator shows a photo, file, album or location (it sends no files)."""
    if isinstance(action, SendLocation):
        place = " ".join(part for part in (action.title, action.address) if part)
        return f"📍 {place} ({action.latitude:g}, {action.longitude:g})".replace("  ", " ")
    kinds = ", ".join(medium.kind for medium in action.media)
    captions = [medium.caption for medium in action.media if medium.caption]
    return f"[{kinds}] " + (captions[0] if captions else action.text)


def transcript_record(*, user: BotUser, actions: list) -> None:
    """Write what the bot would have sent to the test user's transcript."""
    for action in actions:
        if isinstance(action, SendMessage):
            SimulatorMessage.objects.create(
                user=user,
                direction=SimulatorMessage.Direction.BOT,
                text=action.text,
                buttons=_buttons_json(action.buttons),
                reply_keyboard=[list(row) for row in action.reply_keyboard]
                if action.reply_keyboard
                else ([["__remove__"]] if action.remove_reply_keyboard else []),
            )
        elif isinstance(action, EditMessage):
            updated = SimulatorMessage.objects.filter(
                user=user, pk=action.message_id, direction=SimulatorMessage.Direction.BOT
            ).update(text=action.text, buttons=_buttons_json(action.buttons))
            if not updated:
                SimulatorMessage.objects.create(
                    user=user,
                    direction=SimulatorMessage.Direction.BOT,
                    text=action.text,
                    buttons=_buttons_json(action.buttons),
                )
        elif isinstance(action, SendMedia | SendLocation):
            SimulatorMessage.objects.create(
                user=user,
                direction=SimulatorMessage.Direction.BOT,
                text=_media_text(action),
                buttons=_buttons_json(action.buttons),
            )
        elif isinstance(action, AnswerCallback) and action.text:
            SimulatorMessage.objects.create(
                user=user, direction=SimulatorMessage.Direction.NOTICE, text=action.text
            )


def simulator_routed(send: Deliver) -> Deliver:
    """A delivery (``workflows.delivery``) that keeps simulator conversations (no bot)
    in their transcript and hands everything else to ``send`` (Telegram)."""

    def deliver(*, bot_id: int | None, chat_id: int, actions: list) -> list | None:
        if bot_id is not None:
            return send(bot_id=bot_id, chat_id=chat_id, actions=actions)
        user = BotUser.objects.filter(chat_id=chat_id, is_test=True).first()
        if user is None:
            logger.info("Actions for chat %s without a bot and not a test user dropped", chat_id)
            return None
        transcript_record(user=user, actions=actions)
        return None

    return deliver


def _event_from_text(text: str, event_id: str) -> InputEvent:
    if text.startswith("/") and len(text) > 1:
        head, _, payload = text[1:].partition(" ")
        command = head.split("@", 1)[0]
        return InputEvent(
            kind="command", text=text, command=command, payload=payload.strip(), event_id=event_id
        )
    return InputEvent(kind="text", text=text, event_id=event_id)


def simulator_send(
    *, user: BotUser, text: str = "", data: str = "", message_id: int | None = None
) -> bool:
    """One message or button press of the test user, through the engine.

    Returns whether a workflow handled it; a notice says so in the transcript if not.
    """
    if not user.is_test:
        raise ValueError("the simulator only talks as a test user")
    event_id = f"sim:{user.pk}:{uuid.uuid4().hex}"
    if data:
        label = data
        pressed = SimulatorMessage.objects.filter(user=user, pk=message_id).first()
        for row in pressed.buttons if pressed else []:
            for button in row:
                if button.get("data") == data:
                    label = button.get("text", data)
        SimulatorMessage.objects.create(
            user=user, direction=SimulatorMessage.Direction.USER, text=f"[pressed] {label}"
        )
        event = InputEvent(
            kind="callback",
            callback_data=data,
            callback_query_id=event_id,
            message_id=message_id,
            event_id=event_id,
        )
    else:
        text = text.strip()
        if not text:
            return False
        SimulatorMessage.objects.create(
            user=user, direction=SimulatorMessage.Direction.USER, text=text
        )
        event = _event_from_text(text, event_id)
    result = event_process(
        user=user, event=event, bot=None, session_key=simulator_session_key(user)
    )
    transcript_record(user=user, actions=result.actions)
    if not result.handled:
        SimulatorMessage.objects.create(
            user=user,
            direction=SimulatorMessage.Direction.NOTICE,
            text="No workflow answered: no published workflow has a matching trigger "
            "and no conversation was waiting.",
        )
    return result.handled


def simulator_notice(*, user: BotUser, text: str) -> None:
    SimulatorMessage.objects.create(
        user=user, direction=SimulatorMessage.Direction.NOTICE, text=text[:2000]
    )


def simulator_start(
    *, user: BotUser, workflow: Workflow, draft: bool = False, operator=None
) -> None:
    """Start one workflow for the test user, whatever its triggers.

    ``draft``: run the current draft (as a preview version, validated first; raises
    WorkflowValidationError) instead of the published version. The conversation then
    stays on that draft until it ends, like any conversation on its version.
    """
    version_id = None
    if draft:
        preview = workflow_preview_version(workflow=workflow, created_by=operator)
        version_id = preview.pk
        label = "the draft"
    else:
        label = f"version {workflow.published_version.number}"
    simulator_notice(user=user, text=f"Started “{workflow.name}” ({label}).")
    actions = workflow_start_for_user(
        user=user,
        workflow_id=workflow.pk,
        bot=None,
        session_key=simulator_session_key(user),
        event_id=f"sim:{user.pk}:{uuid.uuid4().hex}",
        version_id=version_id,
    )
    transcript_record(user=user, actions=actions)


def simulator_archived_id(user_id: int) -> int:
    """Where a reset test user's Telegram and chat id go: below every simulator id."""
    return -(ARCHIVED_ID_BASE + user_id)


def simulator_reset(*, user: BotUser) -> None:
    """Start over with a fresh test user; the old one is set aside, never deleted.

    The ledger is append-only everywhere, the simulator included: the old test user
    keeps its entries (and conversations, as history) under an archived id, so the
    next :func:`simulator_user_get` creates a new one that arrives like a real user.
    Its conversations still in flight are cancelled, so no late delay or HTTP answer
    reaches the new transcript.
    """
    if not user.is_test:
        raise ValueError("only test users can be reset")
    session_key = simulator_session_key(user)
    user_id, project_id = user.pk, user.project_id
    archived = simulator_archived_id(user_id)
    with transaction.atomic():
        WorkflowExecution.objects.filter(
            user_id=user_id, status__in=[Status.WAITING, Status.RUNNING]
        ).update(
            status=Status.CANCELLED,
            error="cancelled: the simulator was reset",
            wait_until=None,
            finished_at=timezone.now(),
        )
        SimulatorMessage.objects.filter(user_id=user_id).delete()
        BotUser.objects.filter(pk=user_id, is_test=True).update(
            telegram_id=archived, chat_id=archived
        )

        user_state_changed(user_id=user_id, project_id=project_id)
        transaction.on_commit(lambda: waiting_cache_clear(session_key))


_ALLOWED_TAG_RE = re.compile(
    r"&lt;(/?)(b|strong|i|em|u|ins|s|strike|del|code|pre|tg-spoiler|blockquote)&gt;"
)
_LINK_RE = re.compile(r"&lt;a href=&quot;((?:https?|tg)://[^&\s]*)&quot;&gt;")
# An entity the text already had (``&lt;``), after html.escape made it ``&amp;lt;``.
_ENTITY_RE = re.compile(r"&amp;(lt|gt|amp|quot|#\d{1,7}|#x[0-9A-Fa-f]{1,6});")


def telegram_html(text: str) -> SafeString:
    """Telegram's HTML subset for display: the tags Telegram knows, everything else escaped.

    The text is Telegram HTML already: a user's ``<b>`` arrives as ``&lt;b&gt;`` (the
    templates escaped it). Such entities are kept as they are (once the tags are
    restored, so an escaped tag never becomes a real one): escaping them again showed
    ``Anna &lt;b&gt;`` instead of ``Anna <b>``.
    """
    escaped = html.escape(text, quote=True)
    escaped = _ALLOWED_TAG_RE.sub(r"<\1\2>", escaped)
    escaped = _LINK_RE.sub(r'<a href="\1" target="_blank" rel="noopener noreferrer">', escaped)
    escaped = escaped.replace("&lt;/a&gt;", "</a>")
    escaped = _ENTITY_RE.sub(r"&\1;", escaped)
    return mark_safe(escaped)  # noqa: S308 - escaped above, only whitelisted tags restored


# --- What the side panel shows -------------------------------------------------------

READABLE_TEXT_MAX = 300


def readable_value(value: Any) -> str:
    """One value as an operator reads it: text as is, yes/no, JSON for the rest (no repr)."""
    if value is None:
        return "(empty)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        text = value
    elif isinstance(value, int | float):
        text = str(value)
    else:
        text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > READABLE_TEXT_MAX:
        text = text[: READABLE_TEXT_MAX - 1] + "…"
    return text


def readable_fields(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """A step's input or output as ``(label, value)`` rows: nested keys dotted.

    The log stores JSON objects; printed as they are, operators would read Python's
    ``{'request': {...}}``. Lists of plain values stay on one row.
    """
    if isinstance(data, dict):
        rows: list[tuple[str, str]] = []
        for key, value in data.items():
            label = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict) and value:
                rows.extend(readable_fields(value, label))
            else:
                rows.append((label, readable_value(value)))
        return rows
    if data in (None, "", [], {}):
        return []
    return [(prefix or "value", readable_value(data))]


def simulator_language_set(*, user: BotUser, code: str) -> bool:
    """Talk to the test user in ``code`` (one of the project's languages), as if they
    had chosen it in a ``choose_language`` step; "" goes back to the default.
    False when the project does not speak ``code``."""
    if code and code not in user.project.language_list:
        return False
    bot_user_language_set(user, code)
    return True


def simulator_languages(user: BotUser) -> dict[str, Any]:
    """The language select of the simulator: the project's languages, the chosen one."""
    from workflows.engine.steps.choose_language import language_name

    return {
        "sim_languages": [(code, language_name(code)) for code in user.project.language_list],
        "sim_language": user.language,
    }


def simulator_view_get(*, user: BotUser) -> dict[str, Any]:
    """Transcript, reply keyboard, current execution, its step log and the variables."""
    messages = list(SimulatorMessage.objects.filter(user=user).order_by("id"))
    for message in messages:
        message.html = telegram_html(message.text)
    keyboard: list = []
    for message in messages:
        if message.reply_keyboard == [["__remove__"]]:
            keyboard = []
        elif message.reply_keyboard:
            keyboard = message.reply_keyboard
    executions = list(
        WorkflowExecution.objects.filter(user=user)
        .select_related("workflow", "version")
        .order_by("-started_at", "-id")[:5]
    )
    current = next(
        (e for e in executions if e.status in {"waiting", "running"}),
        executions[0] if executions else None,
    )
    logs = list(current.step_logs.order_by("-id")[:30]) if current else []
    for log in logs:
        log.input_rows = readable_fields(log.input)
        log.output_rows = readable_fields(log.output)
    state = user_state_get(user_id=user.pk, project_id=user.project_id)
    return {
        "transcript": messages,
        "keyboard": keyboard,
        "execution": current,
        "executions": executions,
        "logs": list(reversed(logs)),
        "variables": {key: readable_value(value) for key, value in sorted(state.variables.items())},
        "pending": any(e.status == "running" for e in executions),
    }
