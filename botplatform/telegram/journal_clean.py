"""Make a received update storable before it goes into the journal (a jsonb column).

PostgreSQL refuses, for the whole statement: NUL (``\\u0000``) and lone UTF-16
surrogates (``\\ud800``) in text or jsonb, NaN / Infinity (Python's json reads them,
jsonb does not), and numbers beyond 64 bits in the bigint columns. One such update in
a ``getUpdates`` batch used to fail the batch's insert, so the offset never moved and
the bot stayed silent for everyone after it. So every update is cleaned first:

- every string, keys and values at any depth, has NUL and lone surrogates replaced
  by U+FFFD, and NaN / Infinity become null. The update is then recorded and handled
  as usual: the parser, the handler and the user's profile see the cleaned text, so
  a first name with a NUL still gets its answer;
- a number beyond 64 bits stays in the payload (jsonb numbers have no such limit);
  the bigint columns never get one (``update_chat_id`` gives None for it), and the
  parser refuses an id that does not fit, so such an update is recorded and then
  skipped with that reason in its note. (Telegram's ids all fit in 64 bits.);
- an update nested deeper than :data:`MAX_DEPTH`, with more than :data:`MAX_NODES`
  values or :data:`MAX_CHARS` characters of text, or a number json cannot write
  (over 4,300 digits) is refused: only its update_id is kept (a stub, recorded as
  skipped by the poller; the webhook answers 400);
- an update without a usable update_id (missing, not a number, negative, beyond 64
  bits) cannot be recorded at all: :class:`Unrecordable`, logged and dropped.

The bounds are far above anything Telegram sends (its updates nest about ten levels
and carry at most a few thousand values). A normal update costs one ``json.dumps``,
whose text the journal's insert then uses: a few scans of that text prove it within
the bounds and free of anything to clean. Only a suspect one is walked (recursively,
but never deeper than ``MAX_DEPTH`` frames) and copied.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

MAX_DEPTH = 64  # levels of objects and arrays
MAX_NODES = 20_000  # values in objects and arrays
MAX_CHARS = 1_000_000  # characters of text, keys included

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

REPLACEMENT = "\ufffd"

# Python strings hold surrogates only unpaired (a pair in JSON decodes to one code point).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Suspects in json.dumps(ensure_ascii=False) text: an escaped NUL, NaN or Infinity, a
# raw lone surrogate (only possible when the text is not ASCII). Text that merely
# looks so (a user typing "NaN") takes the exact walk: slower, same result.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _suspect(text: str) -> bool:
    return (
        "\\u0000" in text
        or "NaN" in text
        or "Infinity" in text
        or (not text.isascii() and _SURROGATE.search(text) is not None)
    )


class Unrecordable(ValueError):
    """The update has no usable update_id: it cannot go into the journal at all."""


class UpdateRefused(ValueError):
    """The update is too deep or too large to take (the webhook answers 400)."""


class _Refused(Exception):
    """Raised inside the walk when a bound is exceeded; becomes a stub entry."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """What to write into the journal for one received update."""

    update_id: int
    payload: dict
    # The update was too deep or too large: why. ``payload`` is then a stub with only
    # its update_id, to be recorded as skipped with this as its note.
    refused: str = ""
    # ``payload`` as JSON text, for the insert.
    payload_json: str = ""


def text_clean(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD (storable in PostgreSQL)."""
    return _UNSTORABLE.sub(REPLACEMENT, text)


def update_id_valid(value: object) -> bool:
    """An update_id the journal can key on: an integer in 0 .. 2**63-1."""
    return type(value) is int and 0 <= value <= INT64_MAX


class _Walk:
    """The bounded check: counts, and notes what needs cleaning."""

    __slots__ = ("chars", "dirty", "nodes")

    def __init__(self) -> None:
        self.nodes = 0
        self.chars = 0
        self.dirty = False  # a string or a float to replace

    def check(self, value: object, depth: int) -> None:
        kind = type(value)
        if kind is str:
            self._text(value)
        elif kind is int:
            if value.bit_length() > 14_000:  # near Python's 4,300-digit limit for str()
                try:
                    str(value)
                except ValueError:
                    raise _Refused("a number too long to write as JSON") from None
        elif kind is float:
            if not math.isfinite(value):
                self.dirty = True
        elif kind is dict:
            self._enter(len(value), depth)
            for key, item in value.items():
                if type(key) is not str:
                    raise _Refused("an object key that is not text")
                self._text(key)
                self.check(item, depth + 1)
        elif kind is list:
            self._enter(len(value), depth)
            for item in value:
                self.check(item, depth + 1)
        elif value is not None and kind is not bool:
            raise _Refused(f"a value that is not JSON ({kind.__name__})")

    def _text(self, text: str) -> None:
        self.chars += len(text)
        if self.chars > MAX_CHARS:
            raise _Refused(f"more than {MAX_CHARS:,} characters of text")
        if not self.dirty and _UNSTORABLE.search(text) is not None:
            self.dirty = True

    def _enter(self, size: int, depth: int) -> None:
        if depth >= MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
        self.nodes += size
        if self.nodes > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES:,} values")


def _cleaned(value: object) -> object:
    """A cleaned copy (only called after the bounded check passed)."""
    kind = type(value)
    if kind is str:
        return text_clean(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is dict:
        return {text_clean(key): _cleaned(item) for key, item in value.items()}
    if kind is list:
        return [_cleaned(item) for item in value]
    return value


def update_clean(update: object) -> JournalEntry:
    """The journal entry for a received update; raises :class:`Unrecordable`."""
    if type(update) is not dict:
        raise Unrecordable("the update is not a JSON object")
    update_id = update.get("update_id")
    if not update_id_valid(update_id):
        if type(update_id) is int:
            raise Unrecordable("its update_id is negative or beyond 64 bits")
        raise Unrecordable("the update has no update_id")
    try:
        text = json.dumps(update, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):  # not JSON, a 5,000-digit number, too deep
        text = ""
    containers = text.count("{") + text.count("[")
    if (
        text
        and len(text) <= MAX_CHARS
        and containers <= MAX_DEPTH
        and containers + text.count(",") <= MAX_NODES
        and not _suspect(text)
    ):
        return JournalEntry(update_id=update_id, payload=update, payload_json=text)
    return _update_walked(update, update_id)


def _update_walked(update: dict, update_id: int) -> JournalEntry:
    """update_clean's exact path: the bounded walk, and a cleaned copy if needed."""
    walk = _Walk()
    try:
        walk.check(update, 0)
    except _Refused as exc:
        stub = {"update_id": update_id}
        return JournalEntry(
            update_id=update_id,
            payload=stub,
            payload_json=json.dumps(stub),
            refused=f"refused: {exc}",
        )
    payload = _cleaned(update) if walk.dirty else update
    return JournalEntry(
        update_id=update_id,
        payload=payload,
        payload_json=json.dumps(payload, ensure_ascii=False),
    )
