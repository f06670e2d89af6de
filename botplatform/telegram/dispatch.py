"""From a Telegram update to delivered replies, exactly once.

The path, shared by ``runbot`` and the webhook view:

1. :func:`update_record` / :func:`updates_record` store the update
   (``TelegramUpdate``, unique per bot and update_id) BEFORE Telegram is told it
   arrived (the polling offset moves, or the webhook answers 200). A redelivery hits
   the unique constraint and is not handled again. What the database cannot store
   is cleaned first (``journal_clean``), and an update it still refuses is kept as a
   skipped row: content never stops recording, only a failing database does.
2. :func:`update_run` claims the row with a PostgreSQL session advisory lock (freed by
   the server if the process dies, even by ``kill -9``) and, in ONE transaction, runs
   the incoming rate limit, the handler (loyalty upsert + engine) and stores the
   replies with ``status=handled`` (an outbox). A crash before the commit leaves
   nothing applied; the update is simply handled again.
3. It then sends the stored replies, committing ``sent_count`` after each one, and
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

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Max
from django.utils import timezone
from django.utils.module_loading import import_string

from botplatform import metrics, ratelimit
from botplatform.locks import JOURNAL_CLAIM_NAMESPACE
from botplatform.logging import redact
from botplatform.models import Bot, TelegramUpdate
from botplatform.telegram.budget import UpdateBudgetExceeded, update_budget
from botplatform.telegram.journal_clean import (
    JournalEntry,
    Unrecordable,
    UpdateRefused,
    text_clean,
    update_clean,
)
from botplatform.telegram.sender import (
    BotUnauthorized,
    SendDeferred,
    actions_from_json,
    actions_send,
    actions_to_json,
)
from botplatform.telegram.updates import (
    MalformedUpdate,
    ParsedUpdate,
    UnsupportedUpdate,
    update_callback_query_id,
    update_chat_id,
    update_parse,
)
from workflows.engine.events import Action, AnswerCallback, SendMessage

logger = logging.getLogger(__name__)


Status = TelegramUpdate.Status


# --- Bot status ----------------------------------------------------------------------


def bot_status_set(*, bot_id: int, status: str, message: str = "") -> bool:
    """Set a bot's admin-visible status; a no-op (no write) when it is unchanged."""
    changed = (
        Bot.objects.filter(pk=bot_id)
        .exclude(status=status, status_message=message[:500])
        .update(status=status, status_message=message[:500], status_changed_at=timezone.now())
    )
    return bool(changed)


def bot_mark_unauthorized(*, bot: Bot, description: str = "") -> None:
    """401 from Telegram: stop using the bot and say so where operators look."""
    message = (
        f"Telegram rejected the token {bot.token_masked} (401 Unauthorized"
        f"{': ' + description if description else ''}). Paste a new token from @BotFather."
    )
    if bot_status_set(bot_id=bot.pk, status=Bot.Status.UNAUTHORIZED, message=message):
        logger.error("Bot %s (%s): %s Polling stopped.", bot.pk, bot, message)


# --- Recording ---------------------------------------------------------------------------
#
# Content never stops recording: every update is cleaned first (journal_clean: NUL,
# lone surrogates, NaN, absurd depth or size), and a batch
# the database still refuses is recorded row by row, the row it refuses kept as a
# skipped stub. Only a database that refuses everything (down, unreachable) makes
# recording fail, and then the offset rightly stays where it is.


def _brief(update: object) -> str:
    """What a log line may say about an unrecordable update: its type and first keys
    (its repr could be huge, or fail: deep nesting, a 5,000-digit number)."""
    if not isinstance(update, dict):
        return type(update).__name__
    keys = [text_clean(str(key))[:40] for key in list(update)[:8]]
    return f"an object with keys {keys}"


def _row_new(*, bot_id: int, entry: JournalEntry) -> TelegramUpdate:
    return TelegramUpdate(
        bot_id=bot_id,
        update_id=entry.update_id,
        chat_id=None if entry.refused else update_chat_id(entry.payload),
        payload=entry.payload,
        status=Status.SKIPPED if entry.refused else Status.PENDING,
        note=entry.refused[:500],
        handled_at=timezone.now() if entry.refused else None,
    )


def _row_stub(*, bot_id: int, update_id: int, note: str) -> TelegramUpdate:
    """A skipped row that keeps only the update_id: what the database refused to store."""
    return TelegramUpdate(
        bot_id=bot_id,
        update_id=update_id,
        chat_id=None,
        payload={"update_id": update_id},
        status=Status.SKIPPED,
        note=text_clean(note)[:500],
        handled_at=timezone.now(),
    )


def _entry_get(bot_id: int, update: object) -> JournalEntry | None:
    """The cleaned journal entry of an update; None (logged) when it cannot be recorded."""
    try:
        entry = update_clean(update)
    except Unrecordable as exc:
        logger.warning("Bot %s: malformed update skipped (%s): %s", bot_id, exc, _brief(update))
        return None
    if entry.refused:
        logger.warning("Bot %s: update %s %s", bot_id, entry.update_id, entry.refused)
    return entry


def _error_text(exc: BaseException) -> str:
    """The first line of a database error, storable (its context may quote the row)."""
    lines = str(exc).strip().splitlines() or [""]
    return text_clean(f"{type(exc).__name__}: {lines[0]}")[:300]


def _database_usable() -> bool:
    """Whether the connection still answers: tells a row the database refused apart
    from a database that is down (then nothing can be recorded, and nothing should
    be acknowledged)."""
    return connection.connection is not None and connection.is_usable()


def update_record(*, bot_id: int, update: object) -> tuple[TelegramUpdate | None, bool]:
    """Store one update (the webhook path); returns (row, created).

    (None, False) when it cannot be recorded at all (no usable update_id; logged).
    An update the database refuses is recorded as a skipped stub instead. Raises
    :class:`UpdateRefused` for one too deep or too large to take (the webhook answers
    400), and the database's error when the database itself fails.
    """
    entry = _entry_get(bot_id, update)
    if entry is None:
        return None, False
    if entry.refused:
        raise UpdateRefused(entry.refused)
    row = _row_new(bot_id=bot_id, entry=entry)
    try:
        with transaction.atomic():
            row.save(force_insert=True)
        return row, True
    except DatabaseError as exc:
        existing = _row_existing(bot_id, entry.update_id)  # raises if the database is down
        if existing is not None:
            return existing, False  # a redelivery, or its concurrent twin
        reason = _error_text(exc)
    logger.error(
        "Bot %s: update %s could not be recorded (%s); skipped", bot_id, entry.update_id, reason
    )
    stub = _row_stub(
        bot_id=bot_id,
        update_id=entry.update_id,
        note=f"skipped: the database refused it ({reason})",
    )
    with transaction.atomic():
        stub.save(force_insert=True)
    return stub, True


def _row_existing(bot_id: int, update_id: int) -> TelegramUpdate | None:
    return TelegramUpdate.objects.filter(bot_id=bot_id, update_id=update_id).first()


def updates_record(*, bot_id: int, updates: list) -> list[TelegramUpdate]:
    """Store a getUpdates batch; returns the rows still to handle, by update_id.

    One statement as a rule. If the database refuses it, the rows are recorded one by
    one and a row it refuses becomes a skipped stub, so the batch is recorded and the
    offset can move. Raises only when the database itself fails.
    """
    entries: dict[int, JournalEntry] = {}
    for update in updates:
        entry = _entry_get(bot_id, update)
        if entry is not None:
            entries.setdefault(entry.update_id, entry)  # a repeat within the batch: once
    if not entries:
        return []
    rows = [_row_new(bot_id=bot_id, entry=entry) for entry in entries.values()]
    if connection.vendor != "postgresql":
        TelegramUpdate.objects.bulk_create(rows, ignore_conflicts=True)
        return list(
            TelegramUpdate.objects.filter(
                bot_id=bot_id,
                update_id__in=list(entries),
                status__in=[Status.PENDING, Status.HANDLED],
            ).order_by("update_id")
        )
    texts = [entry.payload_json for entry in entries.values()]
    try:
        if not connection.in_atomic_block:  # autocommit: a failed statement leaves nothing
            return _updates_insert(bot_id=bot_id, rows=rows, texts=texts)
        with transaction.atomic():  # a savepoint, so the caller's transaction survives
            return _updates_insert(bot_id=bot_id, rows=rows, texts=texts)
    except DatabaseError as exc:
        if not _database_usable():
            raise
        logger.warning(
            "Bot %s: a batch of %s updates could not be recorded at once (%s); "
            "recording them one by one",
            bot_id,
            len(rows),
            _error_text(exc),
        )
    return _updates_insert_each(bot_id=bot_id, rows=rows, texts=texts)


def _updates_insert_each(
    *, bot_id: int, rows: list[TelegramUpdate], texts: list[str]
) -> list[TelegramUpdate]:
    """The fallback of updates_record: each row in its own transaction; a row the
    database refuses is kept as a skipped stub (with the reason) and logged. A stub
    that cannot be written either means the database is down: that error is raised."""
    kept: list[TelegramUpdate] = []
    for row, text in zip(rows, texts, strict=True):
        try:
            with transaction.atomic():
                kept += _updates_insert(bot_id=bot_id, rows=[row], texts=[text])
            continue
        except DatabaseError as exc:
            reason = _error_text(exc)
        logger.error(
            "Bot %s: update %s could not be recorded (%s); skipped", bot_id, row.update_id, reason
        )
        stub = _row_stub(
            bot_id=bot_id,
            update_id=row.update_id,
            note=f"skipped: the database refused it ({reason})",
        )
        with transaction.atomic():
            _updates_insert(bot_id=bot_id, rows=[stub])
    return sorted(kept, key=lambda row: row.update_id)


def update_record_unreadable(*, bot_id: int, update_id: int, reason: str) -> None:
    """Keep a trace of an update whose getUpdates answer could not be read at all
    (the poller moves past it): a skipped stub, so operators see it."""
    logger.error("Bot %s: update %s skipped: %s", bot_id, update_id, reason)
    stub = _row_stub(bot_id=bot_id, update_id=update_id, note=f"skipped: {reason}")
    _updates_insert(bot_id=bot_id, rows=[stub])


_RECORD_SQL = """
WITH incoming (update_id, chat_id, payload, status, note) AS (VALUES {values}),
inserted AS (
    INSERT INTO {table} (bot_id, update_id, chat_id, payload, status, actions, sent_count,
                         attempts, note, received_at, handled_at)
    SELECT %s, update_id, chat_id, payload, status, '[]'::jsonb, 0, 0, note, now(),
           CASE WHEN status = %s THEN NULL ELSE now() END
    FROM incoming
    ON CONFLICT (bot_id, update_id) DO NOTHING
    RETURNING *
)
SELECT * FROM inserted WHERE status = %s
UNION ALL
SELECT t.* FROM {table} AS t JOIN incoming USING (update_id)
WHERE t.bot_id = %s AND t.status IN (%s, %s)
ORDER BY update_id
"""


def _updates_insert(
    *, bot_id: int, rows: list[TelegramUpdate], texts: list[str] | None = None
) -> list[TelegramUpdate]:
    """updates_record on PostgreSQL: insert the new rows and read back those still to
    handle (new, or recorded before and unfinished) in ONE statement, no transaction.
    ``texts``: the payloads as JSON, when already serialised (by the cleaning)."""
    params: list = []
    for index, row in enumerate(rows):
        text = texts[index] if texts is not None else json.dumps(row.payload)
        params += [row.update_id, row.chat_id, text, row.status, row.note]
    sql = _RECORD_SQL.format(
        table=connection.ops.quote_name(TelegramUpdate._meta.db_table),
        values=", ".join(["(%s::bigint, %s::bigint, %s::jsonb, %s, %s)"] * len(rows)),
    )
    params += [bot_id, Status.PENDING, Status.PENDING, bot_id, Status.PENDING, Status.HANDLED]
    return list(TelegramUpdate.objects.raw(sql, params))


def updates_open(*, bot_id: int) -> list[TelegramUpdate]:
    """Recorded updates not finished yet (after a crash or a lost lease), oldest first."""
    return list(
        TelegramUpdate.objects.filter(
            bot_id=bot_id, status__in=[Status.PENDING, Status.HANDLED]
        ).order_by("update_id")
    )


def update_offset_next(*, bot_id: int) -> int | None:
    """The getUpdates offset: past everything recorded for the bot."""
    last = TelegramUpdate.objects.filter(bot_id=bot_id).aggregate(last=Max("update_id"))["last"]
    return None if last is None else last + 1


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
    return update_pk % 2_147_483_647


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


def engine_handle(*, bot: Bot, parsed: ParsedUpdate) -> list[Action]:
    """The production handler: upsert the user (loyalty), apply a referral, run the engine."""
    from users.models import BotUser
    from users.services import bot_user_upsert, referral_apply, user_state_changed
    from workflows.services import event_process, session_key_for_chat

    user, _created = bot_user_upsert(
        project_id=bot.project_id,
        telegram_id=parsed.telegram_id,
        # The user's private chat (its id is the user's): a group is never stored as
        # theirs, so broadcasts and personal messages never land in a group.
        chat_id=parsed.chat_id if parsed.chat_type == "private" else parsed.telegram_id,
        username=parsed.username,
        first_name=parsed.first_name,
        last_name=parsed.last_name,
        language_code=parsed.language_code,
    )
    if user.is_blocked:  # they write to us again, so they unblocked the bot
        BotUser.objects.filter(pk=user.pk).update(is_blocked=False)
        user.is_blocked = False
        user_state_changed(user_id=user.pk, project_id=user.project_id)
    event = parsed.event
    if event.kind == "command" and event.command == "start" and event.payload.startswith("ref_"):
        referral_apply(user=user, code=event.payload)
    session_key = session_key_for_chat(
        bot_id=bot.pk,
        chat_id=parsed.chat_id,
        chat_type=parsed.chat_type,
        telegram_id=parsed.telegram_id,
    )
    return list(event_process(user=user, event=event, bot=bot, session_key=session_key).actions)


def _handler():
    return import_string(settings.TELEGRAM_EVENT_HANDLER)


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
    verdict: ratelimit.IncomingVerdict | None = None,
) -> None:
    """Rate limit and handler: the update's replies go into ``row`` (unsaved).

    Runs inside the caller's transaction; raises on handler errors. ``verdict``: the
    incoming rate limit's, when the caller checked a whole batch at once.
    """
    project = bot.project
    metrics.project_current_set(project.pk)
    if verdict is None:
        verdict = ratelimit.incoming_check(
            project_id=project.pk,
            telegram_id=parsed.telegram_id,
            limit=project.user_rate_limit_per_minute,
        )
    if verdict == "ok":
        actions = list(_handler()(bot=bot, parsed=parsed))
    elif verdict == "notify":
        actions = [SendMessage(chat_id=parsed.chat_id, text=project.rate_limited_message)]
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
                row_decide(row, row.bot, parsed)
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
        actions = _callback_answered(
            [SendMessage(chat_id=parsed.chat_id, text=row.bot.project.fallback_message)], parsed
        )
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


def update_process(*, bot_id: int, update: dict) -> None:
    """Record and handle one update (the webhook path). Duplicates are handled once."""
    row, _created = update_record(bot_id=bot_id, update=update)
    if row is None or row.status not in (Status.PENDING, Status.HANDLED):
        return
    if settings.TELEGRAM_WEBHOOK_ASYNC:
        from botplatform.telegram.tasks import update_run_task

        transaction.on_commit(lambda: update_run_task.delay(update_pk=row.pk))
        return
    with suppress(BotUnauthorized):
        update_run(update_pk=row.pk, final_attempt=True)


def updates_prune(*, older_than_days: int, batch: int = 5000) -> int:
    """Delete finished journal rows older than the retention; open ones are kept."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted = 0
    while True:
        ids = list(
            TelegramUpdate.objects.filter(
                received_at__lt=cutoff,
                status__in=[Status.DONE, Status.SKIPPED, Status.FAILED, Status.QUARANTINED],
            ).values_list("pk", flat=True)[:batch]
        )
        if not ids:
            return deleted
        deleted += TelegramUpdate.objects.filter(pk__in=ids).delete()[0]
