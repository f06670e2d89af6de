"""The fast path: pending journal rows handled in waves, a fixed handful of statements each.

:func:`dispatch.update_run` handles one update in about thirteen statements (claim,
row lock, user, savepoint, session lock, waiting execution, execution, step log,
outbox, done, unlock). :func:`updates_run_batch` handles what a ``getUpdates`` poll
returned, ONE update as often as a hundred, and the webhook's one update
(``journal.update_record_claimed``), in waves (no chat or user twice in a wave), each
in a fixed handful of statements whatever its size:

1. claim every row (the same per-row advisory lock ``update_run`` takes, so the two
   paths exclude each other) and count the attempt: one statement. A wave of one
   also stamps ``claimed_at`` and commits that on its own, as ``update_run`` does, so
   a runner killed during it leaves a stall for the next claim to count; a wave of
   several claims inside its transaction and stamps nothing, so one death does not
   charge every row of it (``docs/reliability.md``). The webhook's row is inserted
   already claimed and stamped, so it skips this;
2. in one transaction: read the bot and project (kept per process and checked by
   their row versions, ``botcache``) and take every conversation
   (session) lock of the wave (``HandlerBatch.lock_sql``): one statement; then the
   handler's batch reads ahead (``HandlerBatch.read_ahead``: for the engine the users
   and the waiting executions, two statements, and the users' cached state) with the
   incoming rate limits and the replies' send slots joined in: one Redis round trip
   (one script);
3. run the same handler per update as ``update_run`` (:func:`dispatch.row_decide`
   with the wave's ``HandlerBatch``); a conversation that goes on writes nothing yet;
4. write every row's replies and status (the outbox, clearing ``claimed_at``) and the
   handler's put-off writes (``HandlerBatch.writes``: the executions' new waiting
   state, the step logs, the users' last-seen stamps) in ONE statement, and commit;
5. send the replies, then mark the rows done and free the claims: one statement
   (``_finish``; ``update_run`` reads a handled row under its row lock, so a claim
   taken between the two finds it done). The claim's stamp of a wave of one and the
   done marks do not wait for the WAL flush (``journal.async_commit_item``).

Each handler runs under the update budget (``budget``): the one that runs past it is
quarantined, the wave rolls back and its other rows go to ``update_run``. A row
whose last claim never finished (the runner stopped during it) is not taken here
either: ``update_run`` counts that and quarantines the row if it keeps happening.

Any error before the commit rolls the wave back, gives its rows back (a wave of
one's committed attempt and stamp undone, the claims freed: one statement) and
returns them (and all later ones) to the caller, which hands them to ``update_run``
one by one, with its retry and failure rules. Nothing is applied twice; only the
incoming rate-limit counters (Redis) count those updates a second time.

Rows are marked done once per wave: a crash (``kill -9``) during delivery re-sends
the replies of that wave's rows that were already out. A wave of one records its
progress as ``update_run`` does (after each reply of several), so there a crash
re-sends at most one reply, as before. The
ledger and the engine are never run twice. Switch the path off with
``TELEGRAM_BATCH_HANDLING=false``.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import suppress
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from botplatform import metrics, ratelimit
from botplatform.bulk import any_of, hidden, rows_update_sql
from botplatform.conversation import AnswerCallback, actions_from_json
from botplatform.locks import JOURNAL_CLAIM_NAMESPACE
from botplatform.models import Bot, TelegramUpdate
from botplatform.queueing import task_named
from botplatform.telegram.botcache import bot_for_wave
from botplatform.telegram.botstatus import bot_mark_unauthorized
from botplatform.telegram.budget import UpdateBudgetExceeded, update_budget
from botplatform.telegram.dispatch import (
    claim_key,
    connection_check,
    reply_slot,
    row_decide,
    row_outcome,
    row_parse,
    update_quarantine,
    update_run,
)
from botplatform.telegram.handler import HandlerBatch, handler_get
from botplatform.telegram.journal import async_commit_item, update_record, update_record_claimed
from botplatform.telegram.sender import BotUnauthorized, actions_send
from botplatform.telegram.updates import update_chat_type, update_sender_id

logger = logging.getLogger(__name__)

Status = TelegramUpdate.Status


@dataclass
class BatchResult:
    leftovers: list[int] = field(default_factory=list)  # row pks for update_run, in order
    handled: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, per update handled


class _NotAll(Exception):
    """Some row is claimed elsewhere or no longer pending: leave the batch to update_run."""


def _table() -> str:
    return connection.ops.quote_name(TelegramUpdate._meta.db_table)


_CLAIM_SQL = """
WITH claimed AS (
    SELECT u.id FROM unnest(%s::bigint[], %s::int[]) AS u(id, k)
    WHERE pg_try_advisory_lock(%s, u.k)
),
bump AS (
    UPDATE {table} SET attempts = attempts + 1{stamp}
    WHERE id IN (SELECT id FROM claimed) AND status = %s AND claimed_at IS NULL
    RETURNING id
)
SELECT ARRAY(SELECT id FROM claimed), ARRAY(SELECT id FROM bump){async_commit}
"""


def _claim(pks: list[int], *, stamp: bool) -> tuple[list[int], list[int]]:
    """Lock every row we can (session advisory locks) and count an attempt on the
    pending ones: one statement. Returns (claimed pks, bumped pks).

    ``stamp`` (a wave of one, run before its transaction and committed on its own, as
    ``update_run``'s claim): also set ``claimed_at``, so a runner that dies during the
    update leaves a stall for the next claim to count (``dispatch``: quarantine after
    ``TELEGRAM_QUARANTINE_AFTER``). A wave of several claims inside its transaction
    and stamps nothing: a death in its middle must not charge a stall to every row
    of it (``docs/reliability.md``); after a restart ``update_run`` runs the open
    rows one by one and counts for each.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM_SQL.format(
                table=_table(),
                stamp=", claimed_at = now()" if stamp else "",
                async_commit=async_commit_item(),
            ),
            [pks, [claim_key(pk) for pk in pks], JOURNAL_CLAIM_NAMESPACE, Status.PENDING],
        )
        claimed, bumped = cursor.fetchone()[:2]
    return list(claimed), list(bumped)


def _bot_locked(bot_id: int, batch: HandlerBatch) -> Bot:
    """The bot and its project, and the handler's conversation (session) locks of the
    wave, taken until commit: one statement (``botcache``). Read in the transaction,
    so an operator's change applies from the next wave."""
    bot = bot_for_wave(bot_id, batch.lock_sql())
    batch.locked()
    return bot


_RELEASE_SQL = """
WITH undo AS (
    UPDATE {table} SET attempts = attempts - 1, claimed_at = NULL
    WHERE id = ANY(%s::bigint[]) AND status = %s AND claimed_at IS NOT NULL
)
SELECT count(*) FROM unnest(%s::int[]) AS k WHERE pg_advisory_unlock(%s, k)
"""


def _release(claimed: list[int], stamped: list[int]) -> None:
    """Give rows back untouched (the wave was not taken, or rolled back): undo the
    committed attempt and stamp of ``stamped`` rows (a wave of one; a wave of several
    had its attempts rolled back) and free the claims, in one statement.
    ``update_run`` then counts its own attempt, as when the wave had never been tried."""
    if not claimed:
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                _RELEASE_SQL.format(table=_table()),
                [
                    stamped,
                    Status.PENDING,
                    [claim_key(pk) for pk in claimed],
                    JOURNAL_CLAIM_NAMESPACE,
                ],
            )
    except Exception:  # a dead connection: the server has freed its locks already
        logger.warning("Could not free the claims of %s updates", len(claimed), exc_info=True)


def _unlock(pks: list[int]) -> None:
    if not pks:
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM unnest(%s::int[]) AS k WHERE pg_advisory_unlock(%s, k)",
                [[claim_key(pk) for pk in pks], JOURNAL_CLAIM_NAMESPACE],
            )
    except Exception:  # a dead connection: the server has freed its locks already
        logger.warning("Could not free the claims of %s updates", len(pks), exc_info=True)


def _outbox_sql(rows: list[TelegramUpdate]) -> tuple[str, list]:
    return rows_update_sql(
        TelegramUpdate._meta.db_table,
        key="id",
        columns=["chat_id", "actions", "status", "note", "handled_at", "done_at", "claimed_at"],
        rows=[
            (
                row.pk,
                row.chat_id,
                json.dumps(row.actions),
                row.status,
                row.note,
                row.handled_at,
                row.done_at,
                None,  # the attempt ends with the commit: no stall to count after this
            )
            for row in rows
        ],
        casts=_OUTBOX_CASTS,
    )


_OUTBOX_CASTS = {
    "id": "bigint",
    "chat_id": "bigint",
    "actions": "jsonb",
    "status": "text",
    "note": "text",
    "handled_at": "timestamptz",
    "done_at": "timestamptz",
    "claimed_at": "timestamptz",
}


def _write(statements: list[tuple[str, list]]) -> None:
    """All the batch's writes as one statement (data-modifying CTEs)."""
    *ctes, (last_sql, last_params) = statements
    sql = last_sql
    params: list = []
    if ctes:
        sql = (
            "WITH "
            + ", ".join(f"w{i} AS ({cte_sql})" for i, (cte_sql, _) in enumerate(ctes))
            + " "
            + last_sql
        )
        for _sql, cte_params in ctes:
            params += cte_params
    with connection.cursor() as cursor:
        cursor.execute(sql, params + last_params)


def _handle_all(bot: Bot, rows: list[TelegramUpdate], batch: HandlerBatch) -> None:
    """Steps 2 to 4 of the module docstring, inside the batch's transaction."""
    project = bot.project
    parsed = {row.pk: row_parse(row) for row in rows}
    known = [p for p in parsed.values() if p is not None]
    verdicts = dict.fromkeys(parsed)
    if known:
        limit = project.user_rate_limit_per_minute
        checks = [(project.pk, p.telegram_id, limit) for p in known]
        replies = [reply_slot(bot, p) for p in known]
        # The rate limits ride along with the read-ahead's cache read: one script.
        plan = ratelimit.JoinedPlan(ratelimit.incoming_plan(checks, replies=replies))
        batch.read_ahead(bot=bot, updates=known, joined=plan)
        verdicts.update(
            zip(
                [pk for pk, p in parsed.items() if p is not None],
                ratelimit.incoming_verdicts(checks, replies=replies, waits=plan.waits()),
                strict=True,
            )
        )
    for row in rows:
        if parsed[row.pk] is not None:
            with update_budget(row.pk):
                row_decide(row, bot, parsed[row.pk], batch, verdicts[row.pk])
    _write([*batch.writes(), _outbox_sql(rows)])


def waves(rows: list[TelegramUpdate]) -> list[list[TelegramUpdate]]:
    """Split rows so that no chat and no user appears twice in one wave, in order.

    A wave is one transaction: everything read ahead for it (a user's state, the
    chat's waiting step) is then read once and stays true for the whole wave.
    """
    result: list[list[TelegramUpdate]] = []
    last: dict[tuple[str, int], int] = {}
    for row in rows:
        marks = [("chat", row.chat_id if row.chat_id is not None else -row.pk)]
        sender = update_sender_id(row.payload)
        if sender is not None:
            marks.append(("user", sender))
        index = max((last[mark] + 1 for mark in marks if mark in last), default=0)
        if index == len(result):
            result.append([])
        result[index].append(row)
        for mark in marks:
            last[mark] = index
    return result


# Every value a plan could read is hidden (``bulk.hidden``): the handled status
# proved the open rows' index's condition and the claims' count was read, so the
# server planned this statement on every run (0.2 ms), and the plans it made scanned
# that whole index (7,000 entries, 0.4 ms, on a journal not vacuumed for a while)
# where the generic plan looks the rows up by their primary key.
_FINISH_SQL = """
WITH done AS (
    UPDATE {table} SET status = %s, sent_count = jsonb_array_length(actions), done_at = %s
    WHERE id = {any_ids} AND status = {status}
)
SELECT count(*){async_commit} FROM unnest({keys}) AS k WHERE pg_advisory_unlock(%s, k)
"""


def _finish(delivered: list[int], claimed: list[int]) -> None:
    """Mark the delivered rows done and free every claim of the wave: one statement.

    The claims are freed a moment before the done marks commit (the end of the same
    statement); ``dispatch._deliver`` therefore reads a handled row under its row
    lock, so a processor claiming it in that moment finds it done, not handled.
    A failed statement leaves the rows handled (their replies go out again when they
    are next claimed, as after a crash) and the claims are freed on their own.
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                _FINISH_SQL.format(
                    table=_table(),
                    any_ids=any_of("bigint[]"),
                    status=hidden("text"),
                    keys=hidden("int[]"),
                    async_commit=async_commit_item(),
                ),
                [
                    Status.DONE,
                    timezone.now(),
                    delivered,
                    Status.HANDLED,
                    [claim_key(pk) for pk in claimed],
                    JOURNAL_CLAIM_NAMESPACE,
                ],
            )
    except Exception:
        logger.warning("Could not finish a wave of %s updates", len(claimed), exc_info=True)
        connection_check()  # a dead connection is dropped: the server freed its locks
        if connection.connection is not None:
            _unlock(claimed)


def updates_run_batch(
    *, bot_id: int, rows: list[TelegramUpdate], claimed: bool = False
) -> BatchResult:
    """Handle and deliver pending rows of one bot together; see the module docstring.

    ``rows`` are in update order; one row is a wave of one (the usual poll, and the
    webhook). Rows of one chat (or user) go in successive waves, one transaction each.
    ``claimed``: the caller already holds the rows' claims and counted their attempt
    (``journal.update_record_claimed``). Returns the rows left for ``update_run``, in
    order: all of them when the first wave could not be taken as a whole, else those of
    the wave that could not and of every wave after it. Raises BotUnauthorized.
    """
    pks = [row.pk for row in rows]
    if (
        not rows
        or not settings.TELEGRAM_BATCH_HANDLING
        or connection.vendor != "postgresql"
        or any(row.status != Status.PENDING for row in rows)
    ):
        if claimed:
            _release(pks, pks)
        return BatchResult(leftovers=pks)
    # Latency runs from here for every row (the batch is in), minus Bot API time.
    started = (time.perf_counter(), metrics.network_total())
    result = BatchResult()
    left: set[int] = set()
    for wave in waves(rows):
        if left:
            left.update(row.pk for row in wave)
            continue
        done = _wave_run(bot_id, wave, started, claimed=claimed)
        result.handled += done.handled
        result.latencies += done.latencies
        left.update(done.leftovers)
    result.leftovers = [pk for pk in pks if pk in left]
    metrics.maybe_flush()
    return result


def _wave_run(
    bot_id: int, rows: list[TelegramUpdate], started: tuple[float, float], *, claimed: bool
) -> BatchResult:
    """One transaction for the wave's rows, then their delivery."""
    pks = [row.pk for row in rows]
    metrics.project_current_set(None)
    held: list[int] = pks if claimed else []
    stamped: list[int] = pks if claimed else []  # attempts counted and committed
    chats = [
        (row.chat_id, update_chat_type(row.payload), update_sender_id(row.payload))
        for row in rows
        if row.chat_id is not None
    ]
    try:
        if not claimed and len(rows) == 1:
            held, stamped = _claim(pks, stamp=True)
            if stamped != pks:
                raise _NotAll
        with (
            transaction.atomic(),
            handler_get().batch(bot_id=bot_id, chats=chats, ahead=True) as batch,
        ):
            if not held:
                held, bumped = _claim(pks, stamp=False)  # undone by a rollback
                if len(held) != len(pks) or len(bumped) != len(pks):
                    raise _NotAll
            bot = _bot_locked(bot_id, batch)
            _handle_all(bot, rows, batch)
    except UpdateBudgetExceeded as exc:
        connection_check()
        _release(held, stamped)
        if exc.update_pk is not None:
            update_quarantine(update_pk=exc.update_pk, reason=str(exc))
        return BatchResult(leftovers=pks)  # update_run delivers the fallback, runs the rest
    except Exception as exc:
        if not isinstance(exc, _NotAll):
            logger.exception(
                "Bot %s: a batch of %s updates failed; handling them one by one",
                bot_id,
                len(rows),
            )
        _release(held, stamped)
        return BatchResult(leftovers=pks)
    return _deliver(bot, rows, started)


def _progress(row: TelegramUpdate, actions: list, count: int) -> None:
    """A wave of one's delivery progress, as ``update_run`` records it: after each
    reply but the last (recorded with the final status) and button answers (harmless
    twice), so a crash re-sends at most the reply in flight of a row with several. (A
    wave of several re-sends its rows' replies after a crash anyway: no writes.)"""
    if count < len(actions) and not isinstance(actions[count - 1], AnswerCallback):
        TelegramUpdate.objects.filter(pk=row.pk).update(sent_count=count)


def _deliver(bot: Bot, rows: list[TelegramUpdate], started: tuple[float, float]) -> BatchResult:
    """Step 5: send every row's replies in order; stop at the first that must wait."""
    result = BatchResult()
    since, network_before = started
    delivered: list[int] = []
    project_id = bot.project_id
    try:
        for row in rows:
            if result.leftovers:
                result.leftovers.append(row.pk)
                continue
            if row.status == Status.HANDLED:
                sent = [0]  # how many of the row's actions went out (on_sent's counts)
                actions = actions_from_json(row.actions)

                def _sent(
                    count: int, row: TelegramUpdate = row, actions: list = actions, sent=sent
                ) -> None:
                    sent.append(count)
                    if len(rows) == 1:
                        _progress(row, actions, count)

                try:
                    actions_send(bot=bot, chat_id=row.chat_id, actions=actions, on_sent=_sent)
                except BotUnauthorized:
                    raise
                except Exception as exc:
                    logger.warning(
                        "Bot %s: update %s: replies wait for a retry (%s)",
                        bot.pk,
                        row.update_id,
                        exc,
                    )
                    if sent[-1]:
                        TelegramUpdate.objects.filter(pk=row.pk).update(sent_count=sent[-1])
                    result.leftovers.append(row.pk)
                    continue
                delivered.append(row.pk)
            network = metrics.network_total() - network_before
            latency = max(time.perf_counter() - since - network, 0.0)
            result.latencies.append(latency)
            result.handled += 1
            metrics.inc("bp_updates_processed_total", outcome=row_outcome(row))
            metrics.project_add(project_id, "messages")
            metrics.latency_observe(latency, project_id=project_id)
    except BotUnauthorized as exc:
        _finish(delivered, [row.pk for row in rows])
        bot_mark_unauthorized(bot=bot, description=exc.error.description)
        raise
    _finish(delivered, [row.pk for row in rows])
    return result


def update_record_polled(
    *, bot_id: int, update: object
) -> tuple[list[TelegramUpdate], TelegramUpdate | None]:
    """Record a poll's one update already claimed, committed synchronously (the
    poller moves its offset next): the worker that called this handles the claimed
    row at once (:func:`updates_run_batch` with ``claimed=True``), with no recorder
    in between and no claim of its own.

    Returns (rows the poller still queues, the claimed row to handle now): a
    redelivered update's open row, or a row whose claim another connection holds,
    goes to the queue like a recorded batch's; a skipped update to neither. Raises
    what the database raised (the poller then records through the recorder).
    """
    row, _created, claimed = update_record_claimed(bot_id=bot_id, update=update, durable=True)
    if row is None or row.status not in (Status.PENDING, Status.HANDLED):
        return [], None
    return ([], row) if claimed else ([row], None)


def update_process(*, bot_id: int, update: dict) -> None:
    """Record and handle one update (the webhook path). Duplicates are handled once.

    The new row is inserted already claimed and handled as a wave of one
    (:func:`updates_run_batch`): the statements of the polling fast path. What that
    path gives back (an error, a stalled or reopened row) goes to ``update_run``, as
    the final attempt: Telegram does not send an answered update again.
    """
    fast = settings.TELEGRAM_BATCH_HANDLING and not settings.TELEGRAM_WEBHOOK_ASYNC
    if fast:
        row, _created, claimed = update_record_claimed(bot_id=bot_id, update=update)
    else:
        (row, _created), claimed = update_record(bot_id=bot_id, update=update), False
    if row is None or row.status not in (Status.PENDING, Status.HANDLED):
        return
    if settings.TELEGRAM_WEBHOOK_ASYNC:
        task = task_named("telegram.update_run")
        transaction.on_commit(lambda: task.delay(update_pk=row.pk))
        return
    with suppress(BotUnauthorized):
        left = [row.pk]
        if claimed:
            left = updates_run_batch(bot_id=bot_id, rows=[row], claimed=True).leftovers
        for pk in left:
            update_run(update_pk=pk, final_attempt=True)
