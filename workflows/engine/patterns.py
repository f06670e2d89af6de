"""Operator-written regular expressions: checked at publish, time-bounded when run.

Why: a pattern such as ``^([A-Z0-9]+-?)+$`` backtracks exponentially on an answer
like ``AAAA…A!``; Python's ``re`` then holds the GIL for hours and every bot of the
process stops. Two layers:

- :func:`pattern_problem` (publish): the pattern must compile and must not repeat
  something that itself repeats (``(a+)+``, ``(\\w+\\s?)*``) or repeat alternatives
  that can match the same text (``(a|aa)*``). Those are the shapes that backtrack
  exponentially; the message says how to rewrite them.
- :func:`pattern_search` / :func:`pattern_fullmatch` (run): matched with the
  ``regex`` package and a :data:`TIMEOUT`; a pattern that runs out of time counts as
  "does not match" and is logged for the operator. This also covers versions that
  were published before the check existed.
"""

from __future__ import annotations

import logging
import re
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parser  # type: ignore[attr-defined]
from typing import Any

import regex

logger = logging.getLogger(__name__)

TIMEOUT = 0.1  # seconds per match; a sane pattern needs microseconds
MAX_PATTERN = 500  # characters of an operator's pattern

_REPEATS = {sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT}
_REPEATS |= {getattr(sre_constants, "POSSESSIVE_REPEAT", sre_constants.MAX_REPEAT)}
_MAXREPEAT = sre_constants.MAXREPEAT


class _Unsafe(Exception):
    pass


def _children(op: Any, av: Any) -> list:
    """The sub-patterns of one parsed node."""
    if op in _REPEATS:
        return [av[2]]
    if op == sre_constants.SUBPATTERN:
        return [av[3]]
    if op == sre_constants.BRANCH:
        return list(av[1])
    if op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
        return [av[1]]
    if op == sre_constants.GROUPREF_EXISTS:
        return [p for p in av[1:] if p is not None]
    if op == getattr(sre_constants, "ATOMIC_GROUP", None):
        return [av]
    return []


def _has_variable_repeat(items: Any) -> bool:
    for op, av in items:
        if op in _REPEATS and av[0] != av[1]:
            return True
        if any(_has_variable_repeat(child) for child in _children(op, av)):
            return True
    return False


def _first_chars(items: Any) -> set[int] | None:
    """The characters a sub-pattern can start with; None when that is too broad to tell."""
    for op, av in items:
        if op == sre_constants.LITERAL:
            return {av}
        if op == sre_constants.SUBPATTERN:
            return _first_chars(av[3])
        if op == sre_constants.IN:
            chars: set[int] = set()
            for item_op, item_av in av:
                if item_op == sre_constants.LITERAL:
                    chars.add(item_av)
                elif item_op == sre_constants.RANGE and item_av[1] - item_av[0] < 512:
                    chars.update(range(item_av[0], item_av[1] + 1))
                else:
                    return None
            return chars
        if op in (sre_constants.AT,):
            continue
        return None
    return set()


def _overlapping(branches: list) -> bool:
    seen: set[int] = set()
    for branch in branches:
        first = _first_chars(branch)
        if first is None or first & seen or not first:
            return True
        seen |= first
    return False


def _walk(items: Any, inside_repeat: bool) -> None:
    for op, av in items:
        if op in _REPEATS:
            repeats = av[1] > 1 or av[1] == _MAXREPEAT
            if inside_repeat and av[0] != av[1]:
                raise _Unsafe("nested")
            _walk(av[2], inside_repeat or repeats)
            continue
        if op == sre_constants.BRANCH and inside_repeat and _overlapping(list(av[1])):
            raise _Unsafe("alternatives")
        for child in _children(op, av):
            _walk(child, inside_repeat)


def pattern_problem(pattern: object) -> str | None:
    """Why ``pattern`` cannot be published (in operator language), or None."""
    if not isinstance(pattern, str) or not pattern:
        return "write the pattern as a text, e.g. ^[A-Z]{2}\\d{4}$"
    if len(pattern) > MAX_PATTERN:
        return f"the pattern is {len(pattern)} characters long; at most {MAX_PATTERN}"
    try:
        regex.compile(pattern)
        tree = sre_parser.parse(pattern)
    except (regex.error, re.error, RecursionError, OverflowError, ValueError) as exc:
        return f"this is not a valid regular expression: {exc}"
    try:
        _walk(tree, inside_repeat=False)
    except _Unsafe as exc:
        if str(exc) == "nested":
            return (
                "the pattern repeats a part that itself repeats (like (a+)+ or ([A-Z0-9]+-?)+). "
                "On some answers that takes so long that the bot stops answering. Repeat it "
                "once, e.g. ^[A-Z0-9-]+$ instead of ^([A-Z0-9]+-?)+$"
            )
        return (
            "the pattern repeats alternatives that can match the same text (like (a|aa)*). "
            "On some answers that takes so long that the bot stops answering. Make the "
            "alternatives start differently or use a character class, e.g. [ab]+"
        )
    except RecursionError:
        return "the pattern is nested too deeply"
    return None


def _run(method: str, pattern: str, text: str, flags: int) -> bool:
    try:
        compiled = regex.compile(pattern, flags)
        return getattr(compiled, method)(text, timeout=TIMEOUT) is not None
    except TimeoutError:
        logger.warning(
            "the pattern %r took longer than %ss on a %s-character text; counted as no match",
            pattern[:200],
            TIMEOUT,
            len(text),
        )
        return False
    except (regex.error, TypeError, ValueError, RecursionError, OverflowError):
        return False


def pattern_fullmatch(pattern: str, text: str, *, ignore_case: bool = False) -> bool:
    """Whether all of ``text`` matches; False on a bad pattern or when time runs out."""
    return _run("fullmatch", pattern, text, regex.IGNORECASE if ignore_case else 0)


def pattern_search(pattern: str, text: str, *, ignore_case: bool = False) -> bool:
    """Whether ``pattern`` occurs in ``text``; False on a bad pattern or when time runs out."""
    return _run("search", pattern, text, regex.IGNORECASE if ignore_case else 0)


MAX_GROUPS = 20  # captures a trigger keeps (trigger.match.1 ... trigger.match.20)
MAX_GROUP_TEXT = 1000


def pattern_captures(pattern: str, text: str, *, ignore_case: bool = False) -> dict | None:
    """The match's groups as ``{"0": whole, "1": first, ...}`` (named groups by name too),
    or None for no match, a bad pattern or when time runs out. Each at most 1000 chars."""
    try:
        compiled = regex.compile(pattern, regex.IGNORECASE if ignore_case else 0)
        found = compiled.search(text, timeout=TIMEOUT)
    except (TimeoutError, regex.error, TypeError, ValueError, RecursionError, OverflowError):
        return None
    if found is None:
        return None
    groups = {"0": found.group(0)[:MAX_GROUP_TEXT]}
    for index, value in enumerate(found.groups()[:MAX_GROUPS], start=1):
        groups[str(index)] = (value or "")[:MAX_GROUP_TEXT]
    for name, value in list(found.groupdict().items())[:MAX_GROUPS]:
        if name.isidentifier() and not name.startswith("_"):
            groups[name] = (value or "")[:MAX_GROUP_TEXT]
    return groups
