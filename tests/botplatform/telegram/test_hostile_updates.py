"""Hostile updates against the parser, the journal's cleaning and its recording.

Property tests (Hypothesis) feed NUL bytes, lone surrogates, odd Unicode, numbers
beyond 64 bits, NaN, deep nesting, absurd sizes and missing or odd-typed fields
through ``update_parse``, ``update_clean``, ``updates_record`` (a batch) and
``update_record`` (one row) against the real PostgreSQL. They assert that no
exception escapes, every call is bounded in time, every recordable update is
recorded exactly once, and nothing is half-written. Example tests below them pin the
decisions (what is cleaned, skipped, refused) and the row-by-row fallback.
"""

from __future__ import annotations

import json
import logging
import time

import pytest
from django.db import DatabaseError, connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botplatform.models import TelegramUpdate
from botplatform.telegram.dispatch import row_parse
from botplatform.telegram.journal import update_record, updates_record
from botplatform.telegram.journal_clean import (
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH,
    Unrecordable,
    UpdateRefused,
    update_clean,
)
from botplatform.telegram.updates import MalformedUpdate, UnsupportedUpdate, update_parse
from tests.factories import bot_create

Status = TelegramUpdate.Status
BOUND = 2.0  # seconds for one call; each takes milliseconds (the old code took minutes
# for nothing here, but an unbounded walk would show)

# --- Strategies ----------------------------------------------------------------------

HOSTILE_CHARS = ["\x00", "\ud800", "\udfff", "\ufffd", "\u202e", "\U0001f600", "\\u0000", "a"]
texts = st.one_of(
    st.text(max_size=30),
    st.text(st.characters(exclude_categories=()), max_size=30),  # surrogates included
    st.lists(st.sampled_from(HOSTILE_CHARS), max_size=12).map("".join),
    st.sampled_from(["NaN", "Infinity", "/start ref_\x00", "/" + "x" * 5000, "9" * 25]),
)
ints = st.one_of(
    st.integers(min_value=-5, max_value=10**6),
    st.integers(),
    st.sampled_from([INT64_MAX, INT64_MAX + 1, INT64_MIN, INT64_MIN - 1, 2**64, 10**30]),
    # Beyond what json.dumps writes (4,300 digits); built lazily: its repr fails too.
    st.just(5000).map(lambda digits: 10**digits),
)
floats = st.floats(allow_nan=True, allow_infinity=True)
scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(texts, children, max_size=4)
    ),
    max_leaves=20,
)


def _nested(depth: int, leaf: object = 1) -> object:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


absurd = st.one_of(
    st.integers(min_value=MAX_DEPTH - 2, max_value=3000).map(_nested),
    st.integers(min_value=0, max_value=1_500_000).map(lambda n: "x" * n),
    st.integers(min_value=0, max_value=30_000).map(lambda n: list(range(n))),
)
field_values = st.one_of(json_values, json_values, absurd)


@st.composite
def hostile_updates(draw) -> object:
    """Telegram's shape (a message or a callback query), then bent: any field may be
    missing, of another type, or hostile."""
    user = {
        "id": draw(st.one_of(st.integers(1, 10**6), ints)),
        "is_bot": False,
        "first_name": draw(texts),
        "username": draw(st.one_of(st.none(), texts)),
        "language_code": draw(st.one_of(st.none(), texts)),
    }
    chat = {"id": draw(st.one_of(st.integers(1, 10**6), ints)), "type": "private"}
    message = {
        "message_id": draw(st.one_of(st.integers(1, 10**6), ints)),
        "from": user,
        "chat": chat,
        "date": draw(st.one_of(st.integers(0, 2**31), floats)),
        "text": draw(texts),
    }
    if draw(st.booleans()):
        body_kind, body = "message", message
    else:
        body_kind = "callback_query"
        body = {"id": draw(st.one_of(texts, ints)), "from": user, "data": draw(texts)}
        if draw(st.booleans()):
            body["message"] = message
    update: dict = {
        "update_id": draw(st.one_of(st.integers(0, 10**9), ints, texts, st.none())),
        body_kind: body,
    }
    # Bend it: drop, replace or add fields anywhere.
    containers = [update, body, user, chat, message]
    for _ in range(draw(st.integers(0, 3))):
        target = draw(st.sampled_from(containers))
        key = draw(st.one_of(st.sampled_from(sorted(target) or ["x"]), texts))
        if draw(st.booleans()) and key in target:
            del target[key]
        else:
            target[key] = draw(field_values)
    return draw(st.one_of(st.just(update), st.just(update), json_values))


def _storable(value: object) -> bool:
    """What PostgreSQL takes in jsonb: no NUL, no lone surrogate, no NaN."""
    if isinstance(value, str):
        return "\x00" not in value and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, int) or value is None:
        return True
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    return all(_storable(item) for item in value)


def _timed(fn, *args, **kwargs):
    started = time.monotonic()
    try:
        return fn(*args, **kwargs)
    finally:
        assert time.monotonic() - started < BOUND


def _valid_id(update: object) -> int | None:
    if isinstance(update, dict):
        value = update.get("update_id")
        if type(value) is int and 0 <= value <= INT64_MAX:
            return value
    return None


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DB_PROPERTY = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# --- Properties: the parser and the cleaning -----------------------------------------


@PROPERTY
@given(update=hostile_updates())
def test_update_parse_never_raises_anything_but_its_two_errors(update):
    try:
        parsed = _timed(update_parse, bot_id=1, update=update)
    except (MalformedUpdate, UnsupportedUpdate) as exc:
        assert _storable(str(exc))  # it becomes the row's note
        return
    # What a handler gets is storable: texts and ids the database takes.
    assert _storable([parsed.first_name, parsed.last_name, parsed.username])
    assert _storable([parsed.event.text, parsed.event.callback_data, parsed.event.payload])
    ids = [parsed.chat_id, parsed.telegram_id, parsed.update_id, parsed.event.message_id or 0]
    assert all(type(i) is int and INT64_MIN <= i <= INT64_MAX for i in ids)  # bigint columns


@PROPERTY
@given(update=hostile_updates())
def test_update_clean_gives_a_storable_entry_or_a_clear_refusal(update):
    try:
        entry = _timed(update_clean, update)
    except Unrecordable as exc:
        assert _valid_id(update) is None
        assert str(exc)
        return
    assert entry.update_id == _valid_id(update)
    assert _storable(entry.payload)
    assert json.loads(entry.payload_json) == entry.payload
    if entry.refused:
        assert entry.payload == {"update_id": entry.update_id}
        assert entry.refused.startswith("refused: ")
    # Cleaning is idempotent, and a clean update is kept as it is (not even copied).
    again = update_clean(entry.payload)
    assert again.payload == entry.payload and not again.refused
    assert again.payload is entry.payload


@PROPERTY
@given(update=hostile_updates())
def test_cleaning_never_costs_an_answer(update):
    """The handler parses the journal's cleaned payload: whatever the parser takes
    raw, it takes cleaned, to the same result (the texts are cleaned either way)."""
    try:
        entry = update_clean(update)
        raw = update_parse(bot_id=1, update=update)
    except (Unrecordable, MalformedUpdate, UnsupportedUpdate):
        return
    if not entry.refused:  # a refused update is never parsed
        assert update_parse(bot_id=1, update=entry.payload) == raw


# --- Properties: recording against PostgreSQL ---------------------------------------


@pytest.fixture
def journal_bot(db):
    return bot_create()


@DB_PROPERTY
@given(batch=st.lists(hostile_updates(), max_size=6))
def test_updates_record_records_every_recordable_update_exactly_once(journal_bot, batch):
    TelegramUpdate.objects.filter(bot=journal_bot).delete()
    pending = _timed(updates_record, bot_id=journal_bot.pk, updates=batch)

    ids = {i for i in map(_valid_id, batch) if i is not None}
    rows = {row.update_id: row for row in TelegramUpdate.objects.filter(bot=journal_bot)}
    assert set(rows) == ids  # every recordable update, nothing else
    assert TelegramUpdate.objects.filter(bot=journal_bot).count() == len(ids)  # once each
    assert {row.update_id for row in pending} == {
        i for i, row in rows.items() if row.status == Status.PENDING
    }
    for row in rows.values():
        assert row.status in (Status.PENDING, Status.SKIPPED)
        assert (row.status == Status.SKIPPED) == bool(row.note)
    # A redelivery (Telegram re-sends the batch) records nothing new.
    again = updates_record(bot_id=journal_bot.pk, updates=batch)
    assert {row.update_id for row in again} == {row.update_id for row in pending}
    assert TelegramUpdate.objects.filter(bot=journal_bot).count() == len(ids)


@DB_PROPERTY
@given(update=hostile_updates())
def test_update_record_records_once_or_refuses_without_writing(journal_bot, update):
    TelegramUpdate.objects.filter(bot=journal_bot).delete()
    try:
        row, created = _timed(update_record, bot_id=journal_bot.pk, update=update)
    except UpdateRefused:
        assert not TelegramUpdate.objects.filter(bot=journal_bot).exists()  # nothing written
        return
    if _valid_id(update) is None:
        assert (row, created) == (None, False)
        assert not TelegramUpdate.objects.filter(bot=journal_bot).exists()
        return
    assert created and row.update_id == _valid_id(update)
    stored = TelegramUpdate.objects.get(bot=journal_bot)
    assert (stored.pk, stored.status, stored.note) == (row.pk, row.status, row.note)
    row_again, created_again = update_record(bot_id=journal_bot.pk, update=update)
    assert row_again.pk == row.pk and not created_again


# --- The decisions, one by one -------------------------------------------------------


def _message(
    update_id: int, chat_id: int, text: str, first_name: str = "Ann", user_id: int = 0
) -> dict:
    user = {"id": user_id or chat_id, "is_bot": False, "first_name": first_name}
    return {
        "update_id": update_id,
        "message": {
            "message_id": 1,
            "from": user,
            "chat": {"id": chat_id, "type": "private"},
            "date": 0,
            "text": text,
        },
    }


def test_nul_and_lone_surrogates_are_replaced_and_the_update_is_still_handled(journal_bot):
    batch = [
        _message(1, 11, "a\x00b"),
        _message(2, 12, "hello", first_name="Eve\ud800"),
        _message(3, 13, "fine"),
    ]
    rows = updates_record(bot_id=journal_bot.pk, updates=batch)
    assert [(row.update_id, row.status) for row in rows] == [(i, Status.PENDING) for i in (1, 2, 3)]
    first, second, third = (update_parse(bot_id=1, update=row.payload) for row in rows)
    assert first.event.text == "a\ufffdb"
    assert second.first_name == "Eve\ufffd"
    assert third.event.text == "fine"


def test_a_number_beyond_64_bits_is_recorded_then_skipped_with_the_reason(journal_bot):
    """jsonb takes it; the bigint chat_id column gets NULL; the parser refuses the id."""
    batch = [_message(1, 2**70, "big chat", user_id=21), _message(2, 22, "fine")]
    rows = updates_record(bot_id=journal_bot.pk, updates=batch)
    assert [(row.update_id, row.chat_id) for row in rows] == [(1, None), (2, 22)]
    assert rows[0].payload["message"]["chat"]["id"] == 2**70
    assert row_parse(rows[0]) is None  # what update_run and the batch path do with it
    assert rows[0].status == Status.SKIPPED
    assert rows[0].note == (
        "MalformedUpdate: the sender or chat has no numeric id that fits in 64 bits"
    )


def test_nan_and_infinity_become_null(journal_bot):
    update = _message(1, 31, "loc")
    update["message"]["date"] = float("nan")
    update["message"]["x"] = [float("inf"), float("-inf")]
    rows = updates_record(bot_id=journal_bot.pk, updates=[update])
    assert rows[0].payload["message"]["date"] is None
    assert rows[0].payload["message"]["x"] == [None, None]


def test_too_deep_or_too_large_is_refused_and_kept_as_a_stub_by_the_batch(journal_bot, caplog):
    caplog.set_level(logging.WARNING)
    deep = {"update_id": 1, "message": _nested(100_000)}
    wide = {"update_id": 2, "message": list(range(50_000))}
    long = {"update_id": 3, "message": {"text": "x" * 2_000_000}}
    huge = {"update_id": 4, "message": {"message_id": 10**5000}}
    batch = [deep, wide, long, huge, _message(5, 55, "ok")]
    rows = updates_record(bot_id=journal_bot.pk, updates=batch)
    assert [row.update_id for row in rows] == [5]
    stubs = TelegramUpdate.objects.filter(bot=journal_bot, status=Status.SKIPPED)
    assert {row.update_id: row.note for row in stubs} == {
        1: "refused: nested deeper than 64 levels",
        2: "refused: more than 20,000 values",
        3: "refused: more than 1,000,000 characters of text",
        4: "refused: a number too long to write as JSON",
    }
    assert all(row.payload == {"update_id": row.update_id} for row in stubs)
    with pytest.raises(UpdateRefused):  # the webhook refuses instead (400)
        update_record(bot_id=journal_bot.pk, update={**deep, "update_id": 6})
    assert "refused: nested deeper" in caplog.text


def test_an_update_id_that_cannot_key_the_journal_is_logged_and_dropped(journal_bot, caplog):
    caplog.set_level(logging.WARNING)
    batch = [{"update_id": 2**64}, {"update_id": -1}, {"update_id": "7"}, [1], _message(8, 8, "x")]
    rows = updates_record(bot_id=journal_bot.pk, updates=batch)
    assert [row.update_id for row in rows] == [8]
    assert TelegramUpdate.objects.filter(bot=journal_bot).count() == 1
    assert "negative or beyond 64 bits" in caplog.text
    assert "not a JSON object" in caplog.text


# --- The row-by-row fallback ---------------------------------------------------------

_POISON_TRIGGER = """
CREATE FUNCTION test_journal_poison() RETURNS trigger AS $$
BEGIN
    IF NEW.payload ? 'poison' OR {everything} THEN
        RAISE EXCEPTION 'test trigger refuses update %', NEW.update_id;
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER test_journal_poison BEFORE INSERT ON botplatform_telegramupdate
FOR EACH ROW EXECUTE FUNCTION test_journal_poison();
"""


def _poison_trigger(*, everything: bool = False) -> None:
    """A database that refuses some rows (or all): any error the one-statement insert
    may meet that the cleaning does not foresee."""
    with connection.cursor() as cursor:
        cursor.execute(_POISON_TRIGGER.format(everything="true" if everything else "false"))


def _poison_trigger_drop() -> None:
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER IF EXISTS test_journal_poison ON botplatform_telegramupdate")
        cursor.execute("DROP FUNCTION IF EXISTS test_journal_poison()")


def test_a_batch_the_database_refuses_is_recorded_row_by_row(journal_bot, caplog):
    caplog.set_level(logging.WARNING)
    _poison_trigger()
    poison = _message(2, 22, "bad")
    poison["poison"] = True
    batch = [_message(1, 11, "one"), poison, _message(3, 33, "three")]
    rows = updates_record(bot_id=journal_bot.pk, updates=batch)
    assert [row.update_id for row in rows] == [1, 3]
    stub = TelegramUpdate.objects.get(bot=journal_bot, update_id=2)
    assert stub.status == Status.SKIPPED
    assert stub.note.startswith("skipped: the database refused it (")
    assert "test trigger refuses update 2" in stub.note
    assert stub.payload == {"update_id": 2}
    assert "recording them one by one" in caplog.text
    assert "update 2 could not be recorded" in caplog.text
    # The webhook's single row takes the same way out.
    poison["update_id"] = 4
    row, created = update_record(bot_id=journal_bot.pk, update=poison)
    assert created and row.status == Status.SKIPPED and row.payload == {"update_id": 4}


def test_a_database_that_refuses_everything_makes_recording_fail(journal_bot):
    """Then it is the database, not the update: nothing is acknowledged (the poller
    keeps its offset, the webhook answers 503) and nothing is half-written."""
    _poison_trigger(everything=True)
    with pytest.raises(DatabaseError):
        updates_record(bot_id=journal_bot.pk, updates=[_message(1, 11, "one")])
    with pytest.raises(DatabaseError):
        update_record(bot_id=journal_bot.pk, update=_message(2, 22, "two"))
    assert not TelegramUpdate.objects.filter(bot=journal_bot).exists()


@pytest.mark.django_db(transaction=True)
def test_row_by_row_fallback_in_autocommit_as_the_runner_records(caplog):
    """The runner's recorder runs in autocommit (no savepoints): same outcome."""
    bot = bot_create()
    _poison_trigger()
    try:
        poison = _message(2, 22, "bad")
        poison["poison"] = True
        rows = updates_record(bot_id=bot.pk, updates=[_message(1, 11, "a"), poison])
        assert [row.update_id for row in rows] == [1]
        assert TelegramUpdate.objects.get(bot=bot, update_id=2).status == Status.SKIPPED
    finally:
        _poison_trigger_drop()
