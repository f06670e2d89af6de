"""A small, sandboxed template language for operator-written texts.

``Hello, {{ user.first_name | default:"friend" }}! You have {{ user.balance | number }}.``

Why our own: operators are not trusted with Python. A template is parsed into
literal text and placeholders; a placeholder is a dotted path into a whitelisted
tree of plain dicts (``user``, ``vars``, ``bot``, ``trigger``) or a calculation in the
expression language (expressions.py: ``vars.price * 0.9``, ``upper(vars.code)``),
followed by filters from a fixed table. There is no attribute access, no Python
call, no ``eval``: a path can only walk
``dict`` keys that do not start with an underscore, so ``__class__``, settings or
the ORM are unreachable by construction. Values are HTML-escaped on output because
messages are sent with Telegram's HTML parse mode; the literal text around the
placeholders is the operator's own HTML and is kept as written.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal
from functools import lru_cache
from typing import Any

from workflows.engine.expressions import (
    ExpressionError,
    expression_parse,
    expression_plain,
    tree_evaluate,
)
from workflows.engine.numbers import number_parse_or_none, number_plain
from workflows.engine.paths import (  # noqa: F401 - re-exported: the names callers know
    BOT_FIELDS,
    IDENT,
    PATH_RE,
    ROOTS,
    USER_FIELDS,
    Lazy,
    path_check,
    value_resolve,
)

MAX_OUTPUT = 20_000
MAX_TEMPLATE = 20_000  # characters an operator may write in one template
# Room for a bounded number (numbers.py) with 6 decimals: rounding never overflows.
_ROUNDING = Context(prec=80, rounding=ROUND_HALF_UP)


class TemplateError(ValueError):
    """A template that does not parse, or names something that does not exist."""


# --- Filters -----------------------------------------------------------------


def _to_number(value: Any) -> Decimal | None:
    """A bounded number (numbers.py) or None: absurd values render as they are."""
    if isinstance(value, str):
        value = value.replace(",", ".")
    return number_parse_or_none(value)


def _int_arg(arg: Any, default: int, low: int, high: int) -> int:
    """A filter's numeric argument, clamped; anything else means ``default``."""
    number = number_parse_or_none(arg)
    if number is None:
        return default
    return max(low, min(int(number), high))


def _rounded(number: Decimal, decimals: int) -> Decimal:
    return number.quantize(Decimal(1).scaleb(-decimals), context=_ROUNDING)


def _f_default(value: Any, arg: Any = "") -> Any:
    return arg if value is None or value == "" else value


def _f_number(value: Any, arg: Any = 0) -> Any:
    """Thousands separated with a thin space, ``arg`` decimals: 12 345 or 1 234.50."""
    number = _to_number(value)
    if number is None:
        return value
    decimals = _int_arg(arg, 0, 0, 6)
    return f"{_rounded(number, decimals):,.{decimals}f}".replace(",", "\u202f")


def _f_round(value: Any, arg: Any = 0) -> Any:
    number = _to_number(value)
    if number is None:
        return value
    decimals = _int_arg(arg, 0, 0, 6)
    return f"{_rounded(number, decimals):.{decimals}f}"


def _f_truncate(value: Any, arg: Any = 50) -> Any:
    text = _to_text(value)
    limit = _int_arg(arg, 50, 1, MAX_OUTPUT)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _f_plural(value: Any, arg: Any = "s") -> Any:
    """``{{ n }} bonus{{ n | plural:"es" }}``: the suffix unless the number is 1."""
    number = _to_number(value)
    return "" if number is not None and number == 1 else arg


FILTERS: dict[str, tuple[Callable[..., Any], bool]] = {
    # name: (function, takes an argument)
    "default": (_f_default, True),
    "number": (_f_number, True),
    "round": (_f_round, True),
    "truncate": (_f_truncate, True),
    "plural": (_f_plural, True),
    "upper": (lambda v: _to_text(v).upper(), False),
    "lower": (lambda v: _to_text(v).lower(), False),
    "capitalize": (lambda v: _to_text(v)[:1].upper() + _to_text(v)[1:], False),
    "title": (lambda v: _to_text(v).title(), False),
    "trim": (lambda v: _to_text(v).strip(), False),
    "text": (lambda v: _to_text(v), False),
}


# --- Parsing -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Placeholder:
    path: tuple[str, ...]
    filters: tuple[tuple[str, Any], ...]
    # A calculation (``vars.price * 0.9``) instead of a plain path; then ``path`` is ().
    expression: tuple | None = None


@dataclass(frozen=True, slots=True)
class Template:
    parts: tuple[str | Placeholder, ...]

    @property
    def paths(self) -> list[tuple[str, ...]]:
        return [p.path for p in self.parts if isinstance(p, Placeholder) and p.path]


# Matched against a stripped piece, so no leading or trailing \s* can backtrack.
FILTER_RE = re.compile(
    rf"""^(?P<name>{IDENT})(?:\s*:\s*(?P<arg>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|-?\d+(?:\.\d+)?))?$"""
)


def _parse_arg(raw: str | None) -> Any:
    if raw is None:
        return None
    if raw[0] in "\"'":
        return re.sub(r"\\(.)", r"\1", raw[1:-1])
    number = number_parse_or_none(raw)
    if number is None:
        raise TemplateError(f"the number {raw[:20]}… is too long for a filter")
    return number_plain(number)


def _parse_placeholder(source: str) -> Placeholder:
    pieces = _split_pipes(source)
    path_text = pieces[0].strip()
    if not path_text:
        raise TemplateError("empty placeholder {{ }}")
    path: tuple[str, ...] = ()
    expression = None
    if PATH_RE.match(path_text):
        path = tuple(path_text.split("."))
        problem = path_check(path)
        if problem:
            raise TemplateError(problem)
    else:
        try:
            expression = expression_parse(path_text)
        except ExpressionError as exc:
            raise TemplateError(
                f"'{path_text[:40]}' is neither a variable name (e.g. user.first_name) "
                f"nor a calculation: {exc}"
            ) from None
    filters = []
    for piece in pieces[1:]:
        match = FILTER_RE.match(piece.strip())
        if not match:
            raise TemplateError(f"cannot read the filter '{piece.strip()}'")
        name = match["name"]
        if name not in FILTERS:
            raise TemplateError(f"unknown filter '{name}' (known: {', '.join(sorted(FILTERS))})")
        arg = _parse_arg(match["arg"])
        if arg is not None and not FILTERS[name][1]:
            raise TemplateError(f"the filter '{name}' takes no argument")
        filters.append((name, arg))
    return Placeholder(path=path, filters=tuple(filters), expression=expression)


def _split_pipes(source: str) -> list[str]:
    """Split on ``|`` outside quotes."""
    pieces, current, quote = [], [], ""
    for char in source:
        if quote:
            current.append(char)
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
            current.append(char)
        elif char == "|":
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    if quote:
        raise TemplateError("a quote is not closed")
    pieces.append("".join(current))
    return pieces


def template_parse(source: str) -> Template:
    """Parse once, render many times (cached by source text). Raises :class:`TemplateError`.

    Linear in the length of ``source`` (each ``{{`` is found once, its ``}}`` once), and
    ``source`` is at most :data:`MAX_TEMPLATE` characters.
    """
    if not isinstance(source, str):
        raise TemplateError("must be a text")
    if len(source) > MAX_TEMPLATE:
        raise TemplateError(
            f"the text is {len(source)} characters long; at most {MAX_TEMPLATE} are allowed"
        )
    return _parse(source)


@lru_cache(maxsize=2048)
def _parse(source: str) -> Template:
    parts: list[str | Placeholder] = []
    position = 0
    while True:
        start = source.find("{{", position)
        literal = source[position:] if start < 0 else source[position:start]
        if "}}" in literal:
            raise TemplateError("'}}' closes a placeholder that was never opened")
        if literal:
            parts.append(literal)
        if start < 0:
            break
        end = source.find("}}", start + 2)
        if end < 0:
            raise TemplateError("'{{' is opened but never closed with '}}'")
        parts.append(_parse_placeholder(source[start + 2 : end]))
        position = end + 2
    return Template(parts=tuple(parts))


# --- Rendering ---------------------------------------------------------------


def _to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return ", ".join(_to_text(v) for v in value)
    if isinstance(value, str | int | float | Decimal):
        return str(value)
    # Anything else (a dict, an object that slipped in) is never rendered.
    return ""


def _placeholder_value(part: Placeholder, context: Mapping[str, Any]) -> Any:
    if part.expression is None:
        value = value_resolve(context, part.path)
    else:
        try:
            value = expression_plain(tree_evaluate(part.expression, context))
        except ExpressionError as exc:
            raise TemplateError(str(exc)) from None
    for name, arg in part.filters:
        func, takes_arg = FILTERS[name]
        value = func(value, arg) if takes_arg and arg is not None else func(value)
    return value


def template_render(
    source: str, context: Mapping[str, Any], *, escape: bool | Callable[[str], str] = True
) -> str:
    """Render ``source``; values are HTML-escaped unless ``escape`` is off (variables).

    ``escape`` may also be a function: it gets each value's text, once per placeholder
    in order, and returns what to insert (the HTTP step percent-encodes URL values).
    """
    template = template_parse(source)
    out: list[str] = []
    for part in template.parts:
        if isinstance(part, str):
            out.append(part)
            continue
        text = _to_text(_placeholder_value(part, context))
        if callable(escape):
            out.append(escape(text))
        else:
            out.append(html.escape(text, quote=False) if escape else text)
    return "".join(out)[:MAX_OUTPUT]


def template_value(source: str, context: Mapping[str, Any]) -> Any:
    """A template that is exactly one placeholder (``"{{ vars.age }}"``) as the value's own
    type (a number, true/false, a list, null); any other template as its text, unescaped.

    For JSON bodies: ``{"age": "{{ vars.age }}"}`` sends ``{"age": 31}``. The ``text``
    filter keeps a text: ``"{{ vars.zip | text }}"``.
    """
    template = template_parse(source)
    if len(template.parts) != 1 or not isinstance(template.parts[0], Placeholder):
        return template_render(source, context, escape=False)
    part = template.parts[0]
    value = _placeholder_value(part, context)
    if isinstance(value, Decimal):
        value = number_plain(value)
    if isinstance(value, str) and len(value) > MAX_OUTPUT:
        value = value[:MAX_OUTPUT]
    return value


def template_check(source: Any) -> str | None:
    """Why ``source`` is not a valid template, or None."""
    try:
        template_parse(source)
    except TemplateError as exc:
        return str(exc)
    return None
