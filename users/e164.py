"""Phone numbers in E.164 (``+`` and 7 to 15 digits), the one form the platform stores.

Telegram hands a shared contact's number over as digits, usually without the ``+``
("447911123456"); people type "+44 7911 123-456" or "0044 (7911) 123456". This parser
is deliberately small: it removes the usual separators, takes ``+`` or ``00`` as the
international prefix and checks the length E.164 allows. It does not know national
numbering plans (a number without a country code is refused unless the caller says it
is international, as Telegram's are). It looks at no more than :data:`INPUT_LIMIT`
characters, so any input is answered in bounded time.
"""

from __future__ import annotations

INPUT_LIMIT = 64
MIN_DIGITS = 7  # the shortest numbers in use with their country code (Niue: +683 4002)
MAX_DIGITS = 15  # E.164's maximum
SEPARATORS = frozenset(" -().\u00a0")
DIGITS = frozenset("0123456789")


class PhoneInvalid(ValueError):
    """Not a phone number with a country code; the message says why, for the user."""


def phone_e164(text: object, *, international: bool = False) -> str:
    """``text`` as ``+<digits>``; raises :class:`PhoneInvalid` saying why not.

    ``international``: digits without ``+`` or ``00`` already start with the country
    code (Telegram contacts). Otherwise such a number is refused: without knowing the
    country, "07911 123456" cannot be written in E.164.
    """
    if not isinstance(text, str):
        raise PhoneInvalid("a phone number is text")
    if len(text) > INPUT_LIMIT:
        raise PhoneInvalid(f"a phone number is at most {INPUT_LIMIT} characters long")
    value = text.strip()
    if not value:
        raise PhoneInvalid("the phone number is empty")
    plus = value.startswith("+")
    if plus:
        value = value[1:]
    digits = []
    for char in value:
        if char in DIGITS:
            digits.append(char)
        elif char not in SEPARATORS:
            raise PhoneInvalid("a phone number has only digits, spaces, dashes and brackets")
    number = "".join(digits)
    if not plus and number.startswith("00"):
        number, plus = number[2:], True
    if not plus and not international:
        raise PhoneInvalid("please give the number with its country code, like +44 20 7946 0958")
    if number.startswith("0"):
        raise PhoneInvalid("a country code never starts with 0")
    if not MIN_DIGITS <= len(number) <= MAX_DIGITS:
        raise PhoneInvalid(
            f"a phone number with its country code has {MIN_DIGITS} to {MAX_DIGITS} digits"
        )
    return "+" + number


def phone_masked(phone: str) -> str:
    """For logs and lists: "+44791*****56" (the country code and a little, never all)."""
    if len(phone) < 8:
        return "*" * len(phone)
    return phone[:6] + "*" * (len(phone) - 8) + phone[-2:]
