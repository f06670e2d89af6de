"""The E.164 phone parser (users/e164.py): hostile input answered in bounded time with a
clear reason; what it accepts is always ``+`` and 7 to 15 digits, and stable."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from users.e164 import INPUT_LIMIT, PhoneInvalid, phone_e164, phone_masked

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


@pytest.mark.parametrize(
    ("typed", "international", "stored"),
    [
        ("+44 7911 123456", False, "+447911123456"),
        ("0044 (7911) 123-456", False, "+447911123456"),
        ("447911123456", True, "+447911123456"),  # Telegram's contact: no "+"
        ("+1 (202) 555.0143", False, "+12025550143"),
        ("+683 4002", False, "+6834002"),  # Niue: 7 digits in all
        ("\u00a0+49 30 1234567 ", False, "+49301234567"),
    ],
)
def test_common_ways_of_writing_a_number(typed, international, stored):
    assert phone_e164(typed, international=international) == stored


@pytest.mark.parametrize(
    ("typed", "why"),
    [
        ("07911 123456", "country code"),  # national form: the country is unknown
        ("+0 7911 123456", "never starts with 0"),
        ("+44 79", "7 to 15 digits"),
        ("+1234567890123456", "7 to 15 digits"),  # 16 digits
        ("+44 7911 12345x", "only digits"),
        ("+٤٤٧٩١١١٢٣٤٥٦", "only digits"),  # Arabic-Indic digits are not taken
        ("", "empty"),
        ("   ", "empty"),
        ("+" + "1" * INPUT_LIMIT, "at most"),
        ("+44\x007911123456", "only digits"),
    ],
)
def test_what_is_refused_says_why(typed, why):
    with pytest.raises(PhoneInvalid, match=why):
        phone_e164(typed)


def test_a_non_text_is_refused():
    with pytest.raises(PhoneInvalid):
        phone_e164(447911123456)  # type: ignore[arg-type]


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200), st.booleans())
def test_any_text_gets_e164_or_a_clear_refusal(text, international):
    try:
        phone = phone_e164(text, international=international)
    except PhoneInvalid as exc:
        assert str(exc)
        return
    assert E164.match(phone)
    assert phone_e164(phone) == phone  # stable: stored numbers parse to themselves


@settings(max_examples=300, deadline=None)
@given(
    st.from_regex(r"\A[1-9][0-9]{6,14}\Z"),
    st.lists(st.sampled_from([" ", "-", "(", ")", ".", "\u00a0"]), max_size=12),
    st.randoms(use_true_random=False),
)
def test_separators_never_change_the_number(digits, separators, random):
    chars = list(digits)
    for separator in separators:
        chars.insert(random.randint(1, len(chars)), separator)
    assert phone_e164("+" + "".join(chars)) == "+" + digits
    assert phone_e164("00" + digits) == "+" + digits


def test_absurd_inputs_are_answered_at_once():
    started = time.perf_counter()
    for text in ("+" + "1" * 10_000_000, "(" * 1_000_000, "\ud800" * 100_000, "\x00" * 10**6):
        with pytest.raises(PhoneInvalid):
            phone_e164(text)
    assert time.perf_counter() - started < 1


def test_a_masked_number_keeps_the_country_code_and_hides_the_rest():
    assert phone_masked("+447911123456") == "+44791*****56"
    assert "123" not in phone_masked("+447911123456")
    assert phone_masked("+123") == "****"
