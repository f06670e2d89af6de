"""Handling a recorded update and delivering its replies, exactly once.

The per-update path (recording is ``journal``'s; the usual poll and the webhook take
``batch``'s fast path first and give this one what it cannot take):

1. :func:`update_run` claims the row with a PostgreSQL session advisory lock (freed by
   the server if the process dies, even by ``kill -9``) and, in ONE transaction, runs
   the incoming rate limit, the handler (``handler.handler_get()``, a batch of one)
   and stores the replies with ``status=handled`` (an outbox). A crash before the
   commit leaves nothing applied; the update is simply handled again.
2. It then sends the stored replies, committing ``sent_count`` after each one, and
   marks the row ``done``. A crash here resumes after the last reply sent. Only the
   one reply in flight at the instant of a crash can be sent twice (Telegram has no
   idempotency key for sends); nothing is ever lost.

An update that cannot be handled does not come back for ever: a handler error is
retried up to ``TELEGRAM_MAX_ATTEMPTS`` times, an update that runs past its time
budget (``budget``) is quarantined at once, and one during which the runner stopped
``TELEGRAM_QUARANTINE_AFTER`` times (the claim below was taken and never finished) is
quarantined when it is claimed next. Quarantined means: never run again, the user
gets the project's fallback message, the row says why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from botplatform import metrics, ratelimit
from botplatform.conversation import (
    Action,
    AnswerCallback,
    SendMessage,
    actions_from_json,
    actions_to_json,
)
from botplatform.languages import system_text, user_language
from botplatform.locks import JOURNAL_CLAIM_KEY_MODULUS, JOURNAL_CLAIM_NAMESPACE
from botplatform.logging import redact
from botplatform.models import Bot, TelegramUpdate
from botplatform.telegram.botstatus import bot_mark_unauthorized
from botplatform.telegram.budget import UpdateBudgetExceeded, update_budget
from botplatform.telegram.handler import HandlerBatch, handler_get
from botplatform.telegram.sender import BotUnauthorized, SendDeferred, actions_send
from botplatform.telegram.updates import (
    MalformedUpdate,
    ParsedUpdate,
    UnsupportedUpdate,
    update_callback_query_id,
    update_parse,
)

logger = logging.getLogger(__name__)


Status = TelegramUpdate.Status


# --- Claiming ------------------------------------------------------------------------------


_CLAIM_SQL = """
WITH claim AS (SELECT pg_try_advisory_lock(%s, %s) AS claimed),
bump AS (
    UPDATE {table} SET attempts = attempts + 1, claimed_at = now(),
        stalls = stalls + (claimed_at IS NOT NULL)::int
    WHERE id = %s AND status = %s AND (SELECT claimed FROM claim)
    RETURNING stalls
)
SELECT (SELECT claimed FROM claim), (SELECT count(*) FROM bump), (SELECT stalls FROM bump)
"""


def claim_key(update_pk: int) -> int:
    """The advisory lock key of a journal row (the lock takes a 32-bit int)."""
    return update_pk % JOURNAL_CLAIM_KEY_MODULUS


@contextmanager
def _update_claim(update_pk: int) -> Iterator[tuple[bool, bool, int]]:
    """Session advisory lock on the row: one processor at a time; a dead one frees it.

    Yields (claimed, attempt, stalls): ``attempt`` when the row was still pending, its
    ``attempts`` counted and ``claimed_at`` set (committed on its own, so a crash
    mid-handler counts too). Every way an attempt ends clears ``claimed_at``, so
    finding it still set here means the runner stopped in the middle of the last one:
    ``stalls`` counts those. Lock and count are one statement on PostgreSQL.
    """
    if connection.vendor != "postgresql":
        yield True, *_attempt_count(update_pk)
        return
    key = claim_key(update_pk)
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM_SQL.format(table=connection.ops.quote_name(TelegramUpdate._meta.db_table)),
            [JOURNAL_CLAIM_NAMESPACE, key, update_pk, Status.PENDING],
        )
        claimed, bumped, stalls = cursor.fetchone()
    try:
        yield claimed, bool(bumped), stalls or 0
    finally:
        if claimed:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [JOURNAL_CLAIM_NAMESPACE, key])


def _attempt_count(update_pk: int) -> tuple[bool, int]:
    row = TelegramUpdate.objects.filter(pk=update_pk, status=Status.PENDING).first()
    if row is None:
        return False, 0
    stalls = row.stalls + (row.claimed_at is not None)
    TelegramUpdate.objects.filter(pk=update_pk).update(
        attempts=F("attempts") + 1, stalls=stalls, claimed_at=timezone.now()
    )
    return True, stalls


# --- Handling -------------------------------------------------------------------------------


def _callback_answered(actions: list[Action], parsed: ParsedUpdate) -> list[Action]:
    """Every callback query gets an answer, so no button keeps spinning."""
    query_id = parsed.event.callback_query_id
    if parsed.event.kind != "callback" or not query_id:
        return actions
    if any(isinstance(a, AnswerCallback) and a.callback_query_id == query_id for a in actions):
        return actions
    return [AnswerCallback(callback_query_id=query_id), *actions]


ROW_FIELDS = ["chat_id", "actions", "status", "note", "handled_at", "done_at"]


def row_parse(row: TelegramUpdate) -> ParsedUpdate | None:
    """Parse a recorded update; None when it is skipped (the row says why, unsaved)."""
    try:
        return update_parse(bot_id=row.bot_id, update=row.payload)
    except (MalformedUpdate, UnsupportedUpdate) as exc:
        level = logging.WARNING if isinstance(exc, MalformedUpdate) else logging.INFO
        logger.log(level, "Bot %s: update %s skipped: %s", row.bot_id, row.update_id, exc)
        query_id = update_callback_query_id(row.payload)
        row.status = Status.SKIPPED
        row.note = f"{type(exc).__name__}: {exc}"[:500]
        if isinstance(query_id, str) and row.chat_id is not None:
            row.status = Status.HANDLED
            row.actions = actions_to_json([AnswerCallback(callback_query_id=query_id)])
        row.handled_at = timezone.now()
        return None


def row_decide(
    row: TelegramUpdate,
    bot: Bot,
    parsed: ParsedUpdate,
    batch: HandlerBatch,
    verdict: ratelimit.IncomingVerdict | None = None,
) -> None:
    """Rate limit and handler: the update's replies go into ``row`` (unsaved).

    Runs inside the caller's transaction; raises on handler errors. ``batch``: the
    handler's batch the update belongs to. ``verdict``: the incoming rate limit's,
    when the caller checked a whole batch at once.
    """
    project = bot.project
    metrics.project_current_set(project.pk)
    if verdict is None:
        verdict = ratelimit.incoming_check(
            project_id=project.pk,
            telegram_id=parsed.telegram_id,
            limit=project.user_rate_limit_per_minute,
            reply=reply_slot(bot, parsed),
        )
    if verdict == "ok":
        actions = list(batch.handle(bot=bot, parsed=parsed))
    elif verdict == "notify":
        language = user_language(
            "", parsed.language_code, project.language_list, project.default_language
        )
        notice = system_text(project.rate_limited_message, language)
        actions = [SendMessage(chat_id=parsed.chat_id, text=notice)]
    else:
        actions = []
    if verdict != "ok":
        metrics.inc("bp_rate_limited_total")
        metrics.project_add(project.pk, "rate_limited")
    actions = _callback_answered(actions, parsed)
    row.chat_id = parsed.chat_id
    row.actions = actions_to_json(actions)
    row.status = Status.HANDLED if actions else Status.DONE
    row.note = "" if verdict == "ok" else f"rate limited ({verdict})"
    row.handled_at = timezone.now()
    if not actions:
        row.done_at = row.handled_at


def reply_slot(bot: Bot, parsed: ParsedUpdate) -> ratelimit.Reply:
    """The send slot of the update's first reply, taken with its incoming check."""
    return (bot.pk, parsed.chat_id, bot.project.bot_send_rate_per_second)


def _handle(update_pk: int) -> TelegramUpdate:
    """Phase 1, one transaction: rate limit + handler + outbox. Raises on handler errors."""
    with transaction.atomic():
        row = (
            TelegramUpdate.objects.select_for_update(of=("self",))
            .select_related("bot__project")
            .get(pk=update_pk)
        )
        if row.status != Status.PENDING:
            return row
        with update_budget(update_pk):
            parsed = row_parse(row)
            if parsed is not None:
                chat = (parsed.chat_id, parsed.chat_type, parsed.telegram_id)
                with handler_get().batch(bot_id=row.bot_id, chats=[chat]) as batch:
                    row_decide(row, row.bot, parsed, batch)
        row.claimed_at = None
        row.save(update_fields=[*ROW_FIELDS, "claimed_at"])
    return row


def _fail(update_pk: int, exc: BaseException) -> None:
    """Give up on an update after its last attempt (see ``_give_up``)."""
    _give_up(update_pk, note=f"failed: {redact(f'{type(exc).__name__}: {exc}')}")


def update_quarantine(*, update_pk: int, reason: str) -> None:
    """Never run this update again; the user hears the fallback, the row says why.

    For an update that stopped the runner or ran out of time: retrying it would only
    do that again. Delivery (the fallback reply) is left to ``update_run``.
    """
    logger.error("Update row %s quarantined: %s", update_pk, reason)
    _give_up(update_pk, note=f"quarantined: {reason}")


def _give_up(update_pk: int, *, note: str) -> None:
    """Tell the user something went wrong and answer the button (replies stored as the
    outbox); ``_deliver`` gives the row its final status from the note's prefix."""
    row = TelegramUpdate.objects.select_related("bot__project").get(pk=update_pk)
    final = Status.QUARANTINED if note.startswith("quarantined:") else Status.FAILED
    actions: list[Action] = []
    try:
        parsed = update_parse(bot_id=row.bot_id, update=row.payload)
        project = row.bot.project
        language = user_language(
            "", parsed.language_code, project.language_list, project.default_language
        )
        text = system_text(project.fallback_message, language)
        actions = _callback_answered([SendMessage(chat_id=parsed.chat_id, text=text)], parsed)
    except (MalformedUpdate, UnsupportedUpdate):
        pass
    TelegramUpdate.objects.filter(pk=update_pk, status=Status.PENDING).update(
        status=Status.HANDLED if actions else final,
        actions=actions_to_json(actions),
        note=note[:500],
        handled_at=timezone.now(),
        claimed_at=None,
    )


def _deliver(update_pk: int, row: TelegramUpdate | None = None) -> None:
    """Phase 2: send the stored replies from where the last attempt stopped."""
    if row is None:
        row = TelegramUpdate.objects.select_related("bot__project").get(pk=update_pk)
        if row.status == Status.HANDLED and connection.vendor == "postgresql":
            row = _handled_row_locked(update_pk)
    if row.status != Status.HANDLED:
        return
    actions = actions_from_json(row.actions)

    def _progress(count: int) -> None:
        if count < len(actions):  # the last one is recorded with the final status
            if isinstance(actions[count - 1], AnswerCallback):
                return  # answering a button twice after a crash is harmless: no write
            TelegramUpdate.objects.filter(pk=update_pk).update(sent_count=count)

    actions_send(
        bot=row.bot,
        chat_id=row.chat_id,
        actions=actions,
        start=row.sent_count,
        on_sent=_progress,
    )
    final = Status.DONE
    if row.note.startswith("failed:"):
        final = Status.FAILED
    elif row.note.startswith("quarantined:"):
        final = Status.QUARANTINED
    TelegramUpdate.objects.filter(pk=update_pk, status=Status.HANDLED).update(
        status=final, sent_count=len(actions), done_at=timezone.now()
    )


def _handled_row_locked(update_pk: int) -> TelegramUpdate:
    """A handled row read again under its row lock: the fast path frees a wave's
    claims in the statement that marks its rows done (``batch._finish``), so a claim
    taken in that moment waits here for the commit and then finds the row done."""
    with transaction.atomic():
        return (
            TelegramUpdate.objects.select_for_update(of=("self",))
            .select_related("bot__project")
            .get(pk=update_pk)
        )


def update_run(*, update_pk: int, final_attempt: bool = False) -> str:
    """Handle and deliver one recorded update; safe to call again at any time.

    Returns "done" (finished, or finished earlier), "busy" (another process holds it),
    "retry" (handler error or Telegram deferred us; call again later).
    Raises BotUnauthorized when the token was revoked.
    """
    started = time.perf_counter()
    metrics.network_take()
    metrics.project_current_set(None)
    try:
        result, outcome = _update_run(update_pk=update_pk, final_attempt=final_attempt)
    except BotUnauthorized:
        metrics.inc("bp_updates_processed_total", outcome="unauthorized")
        raise
    if outcome:
        project_id = metrics.project_current_get()
        metrics.inc("bp_updates_processed_total", outcome=outcome)
        metrics.project_add(project_id, "messages")
        if outcome in ("failed", "quarantined"):
            metrics.project_add(project_id, "failures")
        elapsed = time.perf_counter() - started - metrics.network_take()
        metrics.latency_observe(max(elapsed, 0.0), project_id=project_id)
    metrics.maybe_flush()
    return result


def _update_run(*, update_pk: int, final_attempt: bool) -> tuple[str, str]:
    """update_run's work; returns (result, outcome for the metrics or "")."""
    outcome = ""
    with _update_claim(update_pk) as (claimed, attempt, stalls):
        if not claimed:
            metrics.inc("bp_lock_contention_total", lock="update_claim")
            return "busy", ""
        row = None
        if attempt and stalls >= settings.TELEGRAM_QUARANTINE_AFTER:
            update_quarantine(
                update_pk=update_pk,
                reason=f"the runner stopped while handling it {stalls} times",
            )
            outcome = "quarantined"
        elif attempt:
            try:
                row = _handle(update_pk)
                outcome = row_outcome(row)
            except UpdateBudgetExceeded as exc:
                connection_check()
                update_quarantine(update_pk=update_pk, reason=str(exc))
                outcome = "quarantined"
            except Exception as exc:
                attempts = TelegramUpdate.objects.values_list("attempts", flat=True).get(
                    pk=update_pk
                )
                logger.exception("Update %s failed (attempt %s)", update_pk, attempts)
                if not (final_attempt or attempts >= settings.TELEGRAM_MAX_ATTEMPTS):
                    TelegramUpdate.objects.filter(pk=update_pk).update(
                        note=redact(f"{type(exc).__name__}: {exc}")[:500], claimed_at=None
                    )
                    return "retry", "retry"
                _fail(update_pk, exc)
                outcome = "failed"
        try:
            _deliver(update_pk, row)
        except SendDeferred as exc:
            logger.warning("Update %s: replies deferred (%s)", update_pk, exc.error.description)
            return "retry", outcome or "deferred"
        except BotUnauthorized as exc:
            bot = Bot.objects.get(pk=TelegramUpdate.objects.get(pk=update_pk).bot_id)
            bot_mark_unauthorized(bot=bot, description=exc.error.description)
            raise
    return "done", outcome


def connection_check() -> None:
    """After a stop raised at an arbitrary bytecode: drop the connection if it is hurt
    (the server then rolls back and frees the session's claims)."""
    if connection.connection is not None and not connection.is_usable():
        connection.close()


def row_outcome(row: TelegramUpdate) -> str:
    if row.status == Status.SKIPPED:
        return "skipped"
    if row.note.startswith("rate limited"):
        return "rate_limited"
    return "ok"
