"""The update journal: every update is stored before Telegram is told it arrived.

:func:`update_record` (the webhook, one update; :func:`update_record_claimed` inserts
it already claimed for the fast path) and :func:`updates_record` (a
``getUpdates`` batch) store each update as a ``TelegramUpdate`` row, unique per bot
and update_id, BEFORE the polling offset moves or the webhook answers 200. A
redelivery hits the unique constraint and is not handled again. What the database
cannot store is cleaned first (``journal_clean``), and an update it still refuses is
kept as a skipped row: content never stops recording, only a failing database does.
Handling the recorded rows is :mod:`botplatform.telegram.dispatch`'s job.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from django.db import DatabaseError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from botplatform.bulk import rows_source
from botplatform.locks import JOURNAL_CLAIM_NAMESPACE, journal_claim_key_sql
from botplatform.models import TelegramUpdate
from botplatform.rawmodels import models_from_sql
from botplatform.telegram.journal_clean import (
    JournalEntry,
    Unrecordable,
    UpdateRefused,
    text_clean,
    update_clean,
)
from botplatform.telegram.updates import update_chat_id

logger = logging.getLogger(__name__)

Status = TelegramUpdate.Status


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
    stub = _refused_stub(bot_id, entry.update_id, reason)
    with transaction.atomic():
        stub.save(force_insert=True)
    return stub, True


def async_commit_item() -> str:
    """A select-list item that commits the statement's own transaction without waiting
    for the WAL flush (``synchronous_commit`` off for that transaction only), for
    statements run in autocommit whose durability a later synchronous commit gives
    anyway, or which may be lost: the webhook's claimed insert, the claim's stamp and
    the done marks. Each flush costs PostgreSQL about 0.6 ms of CPU and the update its
    wait. A synchronous commit flushes the WAL up to its own commit record, so it makes
    every earlier commit durable with it: the webhook answers 200 only after the
    wave's synchronous commit, which carries the insert. What a server crash (not a
    runner's: the server still writes it) could lose within ``wal_writer_delay``: a
    stall not counted, or rows left handled, whose replies then go out again, as after
    a runner's crash between a reply and its done mark (``docs/reliability.md``). The
    polling path's insert and the wave's transaction (the ledger, the conversation)
    stay synchronous. Empty inside a caller's transaction, whose commit is not ours to
    weaken."""
    if connection.in_atomic_block:
        return ""
    return ", set_config('synchronous_commit', 'off', true)"


_RECORD_CLAIMED_SQL = """
WITH inserted AS (
    INSERT INTO {table} (bot_id, update_id, chat_id, payload, status, actions, sent_count,
                         attempts, stalls, note, received_at, claimed_at)
    VALUES (%s, %s, %s, %s::jsonb, %s, '[]'::jsonb, 0, 1, 0, '', now(), now())
    ON CONFLICT (bot_id, update_id) DO NOTHING
    RETURNING *
)
SELECT inserted.*, pg_try_advisory_lock(%s, {key}) AS claimed{async_commit}
FROM inserted
"""


def update_record_claimed(
    *, bot_id: int, update: object, durable: bool = False
) -> tuple[TelegramUpdate | None, bool, bool]:
    """:func:`update_record` for one update handled at once (the webhook, and a poll
    that returned one update): a new row is inserted already claimed (its
    ``update_run`` claim lock taken, its attempt counted, ``claimed_at`` set), in ONE
    statement, so handling it needs no claim of its own
    (``batch.updates_run_batch(claimed=True)``). Returns (row, created, claimed).

    The webhook's insert does not wait for its WAL flush (:func:`async_commit_item`):
    the caller handles a claimed row in a transaction that commits synchronously
    before the webhook answers, and that commit makes the insert durable too.
    ``durable``: commit synchronously (a poller moves its offset, which tells Telegram
    to forget the update, as soon as this returns).

    A redelivery, an update the database refuses, or any database other than
    PostgreSQL goes :func:`update_record`'s way (not claimed). Raises as it does.
    """
    if connection.vendor != "postgresql":
        return *update_record(bot_id=bot_id, update=update), False
    entry = _entry_get(bot_id, update)
    if entry is None:
        return None, False, False
    if entry.refused:
        raise UpdateRefused(entry.refused)
    sql = _RECORD_CLAIMED_SQL.format(
        table=connection.ops.quote_name(TelegramUpdate._meta.db_table),
        key=journal_claim_key_sql("inserted.id"),
        async_commit="" if durable else async_commit_item(),
    )
    params = [
        bot_id,
        entry.update_id,
        update_chat_id(entry.payload),
        entry.payload_json,
        Status.PENDING,
        JOURNAL_CLAIM_NAMESPACE,
    ]
    try:
        if connection.in_atomic_block:  # a savepoint, so the caller's transaction survives
            with transaction.atomic():
                rows = models_from_sql(TelegramUpdate, sql, params)
        else:  # autocommit: a failed statement leaves nothing
            rows = models_from_sql(TelegramUpdate, sql, params)
    except DatabaseError:
        if not _database_usable():
            raise
        # Refused: update_record keeps a skipped stub (or finds the twin).
        return *update_record(bot_id=bot_id, update=update), False
    if not rows:  # recorded before: a redelivery, or its concurrent twin
        existing = _row_existing(bot_id, entry.update_id)
        if existing is not None:
            return existing, False, False
        return *update_record(bot_id=bot_id, update=update), False
    (row,) = rows
    if not row.claimed:  # the lock key is another row's, held elsewhere: give it back
        TelegramUpdate.objects.filter(pk=row.pk).update(attempts=0, claimed_at=None)
        row.attempts, row.claimed_at = 0, None
    return row, True, bool(row.claimed)


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
        stub = _refused_stub(bot_id, row.update_id, reason)
        with transaction.atomic():
            _updates_insert(bot_id=bot_id, rows=[stub])
    return sorted(kept, key=lambda row: row.update_id)


def _refused_stub(bot_id: int, update_id: int, reason: str) -> TelegramUpdate:
    """The row kept for an update the database refused: its id, skipped, and why."""
    logger.error("Bot %s: update %s could not be recorded (%s); skipped", bot_id, update_id, reason)
    return _row_stub(
        bot_id=bot_id, update_id=update_id, note=f"skipped: the database refused it ({reason})"
    )


def update_record_unreadable(*, bot_id: int, update_id: int, reason: str) -> None:
    """Keep a trace of an update whose getUpdates answer could not be read at all
    (the poller moves past it): a skipped stub, so operators see it."""
    logger.error("Bot %s: update %s skipped: %s", bot_id, update_id, reason)
    stub = _row_stub(bot_id=bot_id, update_id=update_id, note=f"skipped: {reason}")
    _updates_insert(bot_id=bot_id, rows=[stub])


_RECORD_SQL = """
WITH incoming AS (SELECT * FROM {source}),
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


_RECORD_COLUMNS = ["update_id", "chat_id", "payload", "status", "note"]
_RECORD_CASTS = {
    "update_id": "bigint",
    "chat_id": "bigint",
    "payload": "jsonb",
    "status": "text",
    "note": "text",
}


def _updates_insert(
    *, bot_id: int, rows: list[TelegramUpdate], texts: list[str] | None = None
) -> list[TelegramUpdate]:
    """updates_record on PostgreSQL: insert the new rows and read back those still to
    handle (new, or recorded before and unfinished) in ONE statement, no transaction.
    ``texts``: the payloads as JSON, when already serialised (by the cleaning)."""
    payloads = texts if texts is not None else [json.dumps(row.payload) for row in rows]
    # One parameter and the same text for any number of rows (botplatform.bulk).
    source, params = rows_source(
        _RECORD_COLUMNS,
        [
            (row.update_id, row.chat_id, payload, row.status, row.note)
            for row, payload in zip(rows, payloads, strict=True)
        ],
        _RECORD_CASTS,
    )
    sql = _RECORD_SQL.format(
        table=connection.ops.quote_name(TelegramUpdate._meta.db_table), source=source
    )
    params += [bot_id, Status.PENDING, Status.PENDING, bot_id, Status.PENDING, Status.HANDLED]
    return models_from_sql(TelegramUpdate, sql, params)


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
