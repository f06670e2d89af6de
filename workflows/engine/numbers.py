"""The one door through which user or template text becomes a number.

Why: ``int(Decimal("1e99999999"))`` builds a hundred-million-digit integer and holds
the GIL for minutes, freezing every bot its process serves. Every step that reads a
number (``input`` validation, the ``bonus`` amount, ``set_variable`` increments,
template filters, condition comparisons) goes through :func:`number_parse`, which
refuses anything absurd *before* any expensive conversion:

- the text is at most :data:`MAX_TEXT` characters (checked first, so parsing is cheap);
- at most :data:`MAX_DIGITS` significant digits;
- the magnitude stays below ``10 ** MAX_EXPONENT`` and no finer than
  ``10 ** -MAX_EXPONENT`` (zero is always fine, whatever exponent it is written with).

Inside these bounds every later operation (``int()``, ``float()``, comparison,
rounding to a few decimals) takes microseconds.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation

MAX_TEXT = 64
MAX_DIGITS = 30
MAX_EXPONENT = 30
_LIMIT = 10**MAX_EXPONENT
NOT_A_NUMBER = "is not a number"


class NumberError(ValueError):
    """Why a value is not an acceptable number: a predicate such as "is too large".

    Callers put the subject in front: "the amount '1e999' is too large (…)".
    """


def number_parse(value: object) -> Decimal:
    """``value`` (text, int or float) as a bounded finite Decimal, or :class:`NumberError`.

    Text is taken as written (the caller decides about decimal commas or spaces);
    surrounding whitespace is ignored.
    """
    if isinstance(value, bool) or value is None:
        raise NumberError(NOT_A_NUMBER)
    if isinstance(value, int):
        if not -_LIMIT < value < _LIMIT:  # compared as ints: no digit string is built
            raise NumberError(f"is too large (at most {MAX_EXPONENT} digits)")
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NumberError(NOT_A_NUMBER)
        value = repr(value)  # shortest round-trip text: at most 17 significant digits
    elif isinstance(value, Decimal):
        value = str(value) if value.is_finite() else "nan"
    if not isinstance(value, str):
        raise NumberError(NOT_A_NUMBER)
    text = value.strip()
    if not text:
        raise NumberError(NOT_A_NUMBER)
    if len(text) > MAX_TEXT:
        raise NumberError(f"is too long (at most {MAX_DIGITS} digits)")
    try:
        number = Decimal(text)
    except (InvalidOperation, ValueError):
        raise NumberError(NOT_A_NUMBER) from None
    if not number.is_finite():
        raise NumberError(NOT_A_NUMBER)
    if number.is_zero():
        return Decimal(0)
    _sign, digits, exponent = number.as_tuple()
    if number.adjusted() >= MAX_EXPONENT:
        raise NumberError(f"is too large (at most {MAX_EXPONENT} digits)")
    if exponent < -MAX_EXPONENT:
        raise NumberError(f"has too many decimals (at most {MAX_EXPONENT})")
    if len(digits) > MAX_DIGITS:
        raise NumberError(f"has too many digits (at most {MAX_DIGITS})")
    return number


def number_parse_or_none(value: object) -> Decimal | None:
    """Like :func:`number_parse`, but None for anything that is not an acceptable number.

    For places where "not a number" is an answer, not an error (template filters,
    condition comparisons).
    """
    try:
        return number_parse(value)
    except NumberError:
        return None


def number_plain(number: Decimal) -> int | float:
    """An int when whole, else a float: what JSON variables store. Cheap for parsed numbers."""
    integral = number.to_integral_value()
    return int(integral) if number == integral else float(number)


def integer_parse(value: object) -> int:
    """A whole number within the bounds, or :class:`NumberError`."""
    number = number_parse(value)
    if number != number.to_integral_value():
        raise NumberError("is not a whole number")
    return int(number)
