"""Hostile input to the API's parsers: phones, amounts, card codes, order ids, scopes.
Each answers a value or its own clear error, in bounded time, for anything."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from users.apikeys import ApiKeyInvalid, scopes_parse
from users.customers import (
    CardCodeInvalid,
    PhoneInvalid,
    card_code_normalize,
    phone_normalize,
)
from users.earn_rules import AmountInvalid, amount_parse
from users.purchases import PurchaseError, currency_check, order_id_check

ODD_TEXT = st.one_of(
    st.text(max_size=64),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.sampled_from(
        [
            "\x00",
            "+\x00491511234567",
            "+" + "9" * 10_000,
            "٤٩١٥١١٢٣٤٥٦٧٨",
            "+49 (151) 1234-5678",
            "",
        ]
    ),
    st.from_regex(r"\+?[0-9 ()-]{0,30}", fullmatch=True),
)
ANYTHING = st.one_of(
    ODD_TEXT,
    st.integers(),
    st.floats(),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
)


@settings(max_examples=300, deadline=500)
@given(ANYTHING)
def test_phone_normalize_answers_e164_or_a_clear_error(raw):
    try:
        phone = phone_normalize(raw)
    except PhoneInvalid as exc:
        assert str(exc)
        return
    assert phone.startswith("+") and phone[1:].isdigit() and 8 <= len(phone) <= 16
    assert phone_normalize(phone) == phone  # idempotent


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("+49 151 1234 5678", "+4915112345678"),
        ("4915112345678", "+4915112345678"),  # Telegram's contacts come without the +
        (" +1 (650) 253-0000 ", "+16502530000"),
    ],
)
def test_phone_examples(raw, expected):
    assert phone_normalize(raw) == expected


@pytest.mark.parametrize(
    "raw", ["+49", "+999999999999", "0151 1234 5678", "+4915112345678x", "+" + "1" * 40]
)
def test_phone_refusals(raw):
    with pytest.raises(PhoneInvalid):
        phone_normalize(raw)


@settings(max_examples=300, deadline=500)
@given(
    st.one_of(
        ANYTHING,
        st.decimals(allow_nan=True, allow_infinity=True),
        st.sampled_from(
            ["1e999999", "-0", "0.001", "12.50", "1E+2", "999999999.99", "1000000000", " 5 "]
        ),
    )
)
def test_amount_parse_answers_a_bounded_two_decimal_amount_or_an_error(raw):
    try:
        amount = amount_parse(raw)
    except AmountInvalid as exc:
        assert str(exc)
        return
    assert isinstance(amount, Decimal) and amount.is_finite()
    assert Decimal(0) <= amount < Decimal(10**9)
    assert amount == amount.quantize(Decimal("0.01"))


def test_amount_examples():
    assert amount_parse("12.50") == Decimal("12.50")
    assert amount_parse(3) == Decimal("3.00")
    for bad in ("0.001", "NaN", "-1", True, "1e999999", "", "x"):
        with pytest.raises(AmountInvalid):
            amount_parse(bad)


@settings(max_examples=200, deadline=200)
@given(ANYTHING)
def test_card_code_normalize(raw):
    try:
        code = card_code_normalize(raw)
    except CardCodeInvalid:
        return
    assert len(code) == 12 and code.isascii() and code.isdigit()


@settings(max_examples=200, deadline=200)
@given(ANYTHING)
def test_order_ids_and_currencies(raw):
    for check in (order_id_check, currency_check):
        try:
            value = check(raw)
        except PurchaseError:
            continue
        assert value == raw and isinstance(value, str) and value.isascii() and "\x00" not in value


@settings(max_examples=200, deadline=200)
@given(st.one_of(ANYTHING, st.lists(ODD_TEXT, max_size=5)))
def test_scopes_parse(raw):
    try:
        scopes = scopes_parse(raw)
    except ApiKeyInvalid:
        return
    assert scopes and set(scopes) <= {"read", "accrue", "redeem", "events"}


# --- hostile request bodies through the whole API: a clear 400, never a 500 ---------


HOSTILE_BODIES = st.one_of(
    st.sampled_from(
        [
            "[" * 100_000,
            '{"a":' * 50 + "1" + "}" * 50,
            '{"customer_id": 1, "order_id": "x", "amount": NaN}',
            '{"customer_id": 1, "order_id": "x", "amount": "1", "items": [{"name": "\\u0000"}]}',
            '{"customer_id": 1, "order_id": "x", "amount": "1", "items": [{"name": "\\ud800"}]}',
            '{"customer_id": 1e999, "order_id": "x", "amount": "1"}',
            '{"customer_id": 1, "order_id": "x", "amount": "1", "currency": "€€€"}',
            "\xff\xfe",
            '"just a string"',
            "[]",
            "x" * 300_000,
        ]
    ),
    st.text(max_size=200),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=10), children, max_size=3)
        ),
        max_leaves=30,
    ).map(lambda value: json.dumps(value)),
)


@pytest.fixture
def hostile_api(db):
    from tests.api.helpers import api_for, customer, project_with_rules

    project = project_with_rules()
    customer(project, balance=100)
    return api_for(project)


@pytest.mark.django_db
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=HOSTILE_BODIES, path=st.sampled_from(["purchases", "holds", "refunds", "customers"]))
def test_hostile_bodies_get_a_json_error_not_a_crash(hostile_api, body, path):
    response = hostile_api.post(path, body)
    assert response.status_code < 500, (body[:100], response.content[:300])
    if response.status_code >= 400:
        assert set(response.json()) >= {"code", "detail"}
