"""What expressions do with values: comparisons, arithmetic and the function table.

Split from expressions.py (the parser) so each module has one job. Values are
``None``, ``bool``, ``str``, ``Decimal`` (every number), ``list``, ``date`` and
``datetime``; numbers from variables (int, float, numeric text) become bounded
Decimals only when an operation needs a number (numbers.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import Any

from django.utils import timezone

from workflows.engine.numbers import MAX_DIGITS, MAX_EXPONENT, number_parse_or_none, number_plain

MAX_STRING = 20_000  # characters of any text an expression builds
MAX_STEPS = 20_000  # budget units per evaluation (a node is one, 100 characters one more)
MAX_DAYS = 3_000_000  # date_add's reach: beyond it Python's dates end anyway
DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y")  # what _DATE_RE reads
_DATE_RE = re.compile(
    r"^(?:(?P<y1>\d{4})-(?P<m1>\d{1,2})-(?P<d1>\d{1,2})"
    r"|(?P<d2>\d{1,2})[./](?P<m2>\d{1,2})[./](?P<y2>\d{4}))$"
)
_ARITHMETIC = Context(prec=MAX_DIGITS, rounding=ROUND_HALF_UP)
_WIDE = Context(prec=MAX_DIGITS * 3, rounding=ROUND_HALF_UP)
_SMALLEST = Decimal(1).scaleb(-MAX_EXPONENT)


class ExpressionError(ValueError):
    """An expression that does not parse, names an unknown variable or costs too much."""


class Budget:
    """The work one evaluation may do; running out is an :class:`ExpressionError`."""

    __slots__ = ("_today", "left")

    def __init__(self, units: int = MAX_STEPS) -> None:
        self.left = units
        self._today: date | None = None

    def today(self) -> date:
        """Today in the server's time zone, read once per evaluation."""
        if self._today is None:
            self._today = timezone.localdate()
        return self._today

    def charge(self, units: int) -> None:
        self.left -= units
        if self.left < 0:
            raise ExpressionError(
                f"the expression does too much work (more than {MAX_STEPS} steps); simplify it"
            )

    def text(self, length: int) -> None:
        """Check a text's length *before* it is built, and pay for it."""
        if length > MAX_STRING:
            raise ExpressionError(f"the result would be longer than {MAX_STRING} characters")
        self.charge(length // 100)


# --- Conversions ----------------------------------------------------------------


def from_context(value: Any, budget: Budget) -> Any:
    """A variable's value as it enters an expression (long texts cost their length)."""
    if isinstance(value, str):
        budget.charge(len(value) // 100)
    elif isinstance(value, list):
        budget.charge(len(value))
    return value


def as_number(value: Any) -> Decimal | None:
    """A bounded number (a decimal comma is fine) or None; True/False are not numbers."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str):
        if len(value) > 64:
            return None
        value = value.replace(",", ".")
    return number_parse_or_none(value)


def number_out(number: Decimal) -> int | float:
    return number_plain(number)


def as_date(value: Any) -> date | None:
    """A date from a date, a datetime (its day) or text like 2000-12-31 or 31.12.2000."""
    if isinstance(value, datetime):
        return timezone.localtime(value).date() if timezone.is_aware(value) else value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or len(value) > 40:
        return None
    text = value.strip()
    match = _DATE_RE.match(text)  # the formats of DATE_FORMATS, without strptime's cost
    if match:
        year, month, day = (
            match["y1"] or match["y2"],
            match["m1"] or match["m2"],
            match["d1"] or match["d2"],
        )
        try:
            return date(int(year), int(month), int(day))
        except ValueError:
            return None
    if len(text) > 10 and text[4:5] == "-":
        try:
            return as_date(datetime.fromisoformat(text))
        except ValueError:
            return None
    return None


def datetime_text(value: datetime) -> str:
    if timezone.is_aware(value):
        value = timezone.localtime(value)
    return value.strftime("%Y-%m-%d %H:%M")


def as_text(value: Any, depth: int = 0) -> str:
    """A value as text; lists nested deeper than 10 (a stored JSON answer) show nothing."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal):
        return str(number_plain(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return datetime_text(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        return "" if depth > 10 else ", ".join(as_text(item, depth + 1) for item in value)
    if isinstance(value, str | int | float):
        return str(value)
    return ""


def _bounded(number: Decimal) -> Decimal | None:
    """A result inside the bounds of numbers.py, or None (too large)."""
    if not number.is_finite():
        return None
    if number.is_zero():
        return Decimal(0)
    if number.adjusted() >= MAX_EXPONENT:
        return None
    if number.as_tuple().exponent < -MAX_EXPONENT:
        number = number.quantize(_SMALLEST, context=_WIDE)
        return Decimal(0) if number.is_zero() else number
    return number


# --- Operators ------------------------------------------------------------------


def arithmetic(op: str, left: Any, right: Any, budget: Budget) -> Any:
    """``left op right``; a value that is not a number gives None, never an error."""
    a, b = as_number(left), as_number(right)
    if a is None or b is None or isinstance(left, bool) or isinstance(right, bool):
        if op == "+" and (isinstance(left, str) or isinstance(right, str)):
            if left is None or right is None:
                return None
            text_left, text_right = as_text(left), as_text(right)
            budget.text(len(text_left) + len(text_right))
            return text_left + text_right
        return None
    try:
        if op == "+":
            result = _ARITHMETIC.add(a, b)
        elif op == "-":
            result = _ARITHMETIC.subtract(a, b)
        elif op == "*":
            result = _ARITHMETIC.multiply(a, b)
        elif b.is_zero():
            return None
        elif op == "/":
            result = _ARITHMETIC.divide(a, b)
        else:
            result = _ARITHMETIC.remainder(a, b)
    except (InvalidOperation, ArithmeticError):
        return None
    return _bounded(result)


def equal(a: Any, b: Any) -> bool:
    if isinstance(a, date) or isinstance(b, date):
        da, db = as_date(a), as_date(b)
        return da is not None and da == db
    na, nb = as_number(a), as_number(b)
    if na is not None and nb is not None and not isinstance(a, bool) and not isinstance(b, bool):
        return na == nb
    if isinstance(a, str) and isinstance(b, str):
        return a.strip().casefold() == b.strip().casefold()
    return a == b


def _ordered(a: Any, b: Any) -> tuple[Any, Any] | None:
    """Two values that compare: both dates (one computed), both numbers, both texts."""
    if isinstance(a, date) or isinstance(b, date):
        if isinstance(a, datetime) and isinstance(b, datetime):
            return a, b
        da, db = as_date(a), as_date(b)
        return (da, db) if da is not None and db is not None else None
    na, nb = as_number(a), as_number(b)
    if na is not None and nb is not None:
        return na, nb
    if isinstance(a, str) and isinstance(b, str):
        return a, b
    return None


def compare(op: str, a: Any, b: Any) -> bool:
    """A comparison that makes no sense (``"abc" > 3``) is false, not an error."""
    if op == "==":
        return equal(a, b)
    if op == "!=":
        return not equal(a, b)
    if op == "contains":
        if isinstance(a, str) and b is not None:
            return as_text(b).casefold() in a.casefold()
        if isinstance(a, list):
            return any(equal(item, b) for item in a)
        return False
    if op == "in":
        return compare("contains", b, a)
    pair = _ordered(a, b)
    if pair is None:
        return False
    left, right = pair
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]


# --- Functions ------------------------------------------------------------------


def _int(value: Any) -> int | None:
    number = as_number(value)
    if number is None:
        return None
    return int(number.to_integral_value(rounding=ROUND_DOWN))


def _f_today(budget: Budget) -> date:
    return budget.today()


def _f_now(budget: Budget) -> datetime:
    return timezone.now()


def _f_date(budget: Budget, value: Any) -> date | None:
    return as_date(value)


def _f_age(budget: Budget, value: Any) -> Decimal | None:
    """Whole years from a birth date to today (None for a date in the future)."""
    born, today = as_date(value), budget.today()
    if born is None or born > today:
        return None
    years = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    return Decimal(years)


def _f_days_between(budget: Budget, first: Any, second: Any) -> Decimal | None:
    a, b = as_date(first), as_date(second)
    return None if a is None or b is None else Decimal((b - a).days)


def _f_date_add(budget: Budget, value: Any, days: Any) -> date | None:
    start, count = as_date(value), _int(days)
    if start is None or count is None or abs(count) > MAX_DAYS:
        return None
    try:
        return start + timedelta(days=count)
    except OverflowError:
        return None


def _text_function(func: Callable[[str], str]) -> Callable[..., Any]:
    def apply(budget: Budget, value: Any) -> Any:
        if value is None:
            return None
        text = as_text(value)
        budget.text(len(text))
        result = func(text)  # upper("ß") is "SS": at most 3 times the (bounded) input
        budget.text(len(result))
        return result

    return apply


def _f_length(budget: Budget, value: Any) -> Decimal | None:
    if isinstance(value, list):
        return Decimal(len(value))
    return None if value is None else Decimal(len(as_text(value)))


def _f_replace(budget: Budget, value: Any, old: Any, new: Any) -> Any:
    if value is None:
        return None
    text, old_text, new_text = as_text(value), as_text(old), as_text(new)
    if not old_text:
        return text
    budget.text(len(text))
    count = text.count(old_text)
    budget.text(len(text) + count * (len(new_text) - len(old_text)))
    return text.replace(old_text, new_text)


def _f_slice(budget: Budget, value: Any, start: Any, end: Any = None) -> Any:
    if value is None:
        return None
    items = value if isinstance(value, list) else as_text(value)
    first = _int(start)
    last = None if end is None else _int(end)
    if first is None or (end is not None and last is None):
        return None
    budget.charge(len(items) // 100)
    return items[first:last]


def _f_round(budget: Budget, value: Any, decimals: Any = 0) -> Decimal | None:
    number, places = as_number(value), _int(decimals)
    if number is None or places is None:
        return None
    places = max(0, min(places, 6))
    return number.quantize(Decimal(1).scaleb(-places), context=_WIDE)


def _extreme(pick: Callable[..., Any]) -> Callable[..., Any]:
    def apply(budget: Budget, *values: Any) -> Any:
        if len(values) == 1 and isinstance(values[0], list):
            values = tuple(values[0])
        budget.charge(len(values))
        if not values or any(v is None for v in values):
            return None
        numbers = [as_number(v) for v in values]
        if all(n is not None for n in numbers):
            return pick(numbers)
        if any(isinstance(v, date) for v in values):
            dates = [as_date(v) for v in values]
            return pick(dates) if all(d is not None for d in dates) else None
        if all(isinstance(v, str) for v in values):
            return pick(values)
        return None

    return apply


# name: (function(budget, *args), fewest arguments, most arguments)
FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int]] = {
    "today": (_f_today, 0, 0),
    "now": (_f_now, 0, 0),
    "date": (_f_date, 1, 1),
    "age": (_f_age, 1, 1),
    "days_between": (_f_days_between, 2, 2),
    "date_add": (_f_date_add, 2, 2),
    "lower": (_text_function(str.lower), 1, 1),
    "upper": (_text_function(str.upper), 1, 1),
    "trim": (_text_function(str.strip), 1, 1),
    "length": (_f_length, 1, 1),
    "replace": (_f_replace, 3, 3),
    "slice": (_f_slice, 2, 3),
    "round": (_f_round, 1, 2),
    "min": (_extreme(min), 1, 50),
    "max": (_extreme(max), 1, 50),
}
