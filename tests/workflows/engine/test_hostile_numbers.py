"""Absurd numbers never freeze a runner: one bounded parser behind every step.

``int(Decimal("1e99999999"))`` used to build a hundred-million-digit integer while
holding the GIL for minutes. The timed assertions below use bounds that are
thousands of times what the parser needs; the old code needed minutes.
"""

from __future__ import annotations

import contextlib
import time
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.workflows.conftest import buttons, command, press, publish, text, texts
from users.models import BonusTransaction, UserVariable
from workflows.engine.numbers import (
    MAX_DIGITS,
    MAX_EXPONENT,
    NumberError,
    integer_parse,
    number_parse,
)
from workflows.engine.steps.input import Invalid, answer_validate
from workflows.engine.templating import template_render
from workflows.engine.validation import WorkflowValidationError, workflow_validate
from workflows.models import WorkflowExecution

ABSURD = ["1e99999999", "1e1000000", "-9e999999999", "1" * 5000, "0." + "0" * 80 + "1"]

# Text that looks like numbers to a parser: digits, exponents, signs, separators,
# the odd Unicode digit, NUL and a lone surrogate.
number_like = st.one_of(
    st.builds(
        lambda sign, digits, exp: f"{sign}{digits}e{exp}",
        st.sampled_from(["", "-", "+"]),
        st.text("0123456789.", min_size=1, max_size=40),
        st.integers(min_value=-(10**12), max_value=10**12),
    ),
    st.text("0123456789.,-+eE _\u0660\u0967\x00\ud800∞", max_size=120),
    st.from_regex(r"\A-?\d{1,80}(\.\d{1,80})?\Z", fullmatch=True),
)


def _quick(func, *args) -> float:
    started = time.perf_counter()
    with contextlib.suppress(NumberError, Invalid):
        func(*args)
    return time.perf_counter() - started


def test_absurd_numbers_are_refused_at_once():
    for raw in ABSURD:
        assert _quick(number_parse, raw) < 0.5, raw
        try:
            number_parse(raw)
        except NumberError:
            continue
        raise AssertionError(f"{raw!r} was accepted")


def test_numbers_within_the_bounds_are_exact():
    assert number_parse("12.50") == Decimal("12.50")
    assert number_parse(" -7 ") == Decimal(-7)
    assert number_parse("0e-99999999") == 0  # zero is zero however it is written
    assert number_parse("9" * MAX_DIGITS) == Decimal("9" * MAX_DIGITS)
    assert integer_parse(f"1e{MAX_EXPONENT - 1}") == 10 ** (MAX_EXPONENT - 1)
    assert number_parse(0.1) == Decimal("0.1")
    for refused in [f"1e{MAX_EXPONENT}", 10**MAX_EXPONENT, float("inf"), True, "nan", "12a"]:
        try:
            number_parse(refused)
        except NumberError:
            continue
        raise AssertionError(f"{refused!r} was accepted")


@settings(max_examples=200, deadline=None)
@given(number_like)
def test_number_parse_is_bounded_for_any_text(raw):
    """Only NumberError escapes, quickly; what passes is small enough for int()."""
    started = time.perf_counter()
    try:
        number = number_parse(raw)
    except NumberError:
        pass
    else:
        assert number.copy_abs() < 10**MAX_EXPONENT  # abs() would round to 28 digits
        int(number)  # instantaneous inside the bounds
        float(number)
    assert time.perf_counter() - started < 1


@settings(max_examples=200, deadline=None)
@given(st.one_of(number_like, st.text(max_size=1200)), st.sampled_from(["number", "integer"]))
def test_input_number_validation_answers_every_text_with_a_value_or_a_retry(raw, kind):
    started = time.perf_counter()
    try:
        value = answer_validate({"type": kind, "min": -5}, raw)
    except Invalid as exc:
        assert str(exc)  # the user is told why
    else:
        assert isinstance(value, int if kind == "integer" else float)
        # A float may round up to the bound, whose nearest float is above 10**30.
        bound = 10**MAX_EXPONENT if kind == "integer" else float(10**MAX_EXPONENT)
        assert -5 <= value <= bound
    assert time.perf_counter() - started < 1


@settings(max_examples=150, deadline=None)
@given(number_like, st.sampled_from(["number", "round:2", "plural", "number:6"]))
def test_number_filters_render_any_variable_value(raw, flt):
    """The filters read numbers through the same parser; absurd ones render as text."""
    started = time.perf_counter()
    out = template_render(f"{{{{ vars.x | {flt} }}}}", {"vars": {"x": raw}}, escape=False)
    assert isinstance(out, str) and len(out) <= 200
    assert time.perf_counter() - started < 1


def test_the_number_filter_rounds_the_largest_accepted_number():
    """Old code: Decimal.quantize raised InvalidOperation past 28 digits (a crash)."""
    big = "9" * MAX_DIGITS
    assert template_render("{{ vars.x | round:6 }}", {"vars": {"x": big}}) == big + ".000000"
    assert template_render("{{ vars.x | number }}", {"vars": {"x": "1e99999999"}}) == "1e99999999"


def _ask_number(project, kind="integer"):
    publish(
        project,
        {
            "start": "ask",
            "steps": {
                "ask": {
                    "type": "input",
                    "text": "How many?",
                    "variable": "count",
                    "validate": {"type": kind},
                    "max_attempts": 3,
                    "next": "ok",
                },
                "ok": {"type": "message", "text": "Got {{ vars.count }}"},
            },
        },
    )


def test_an_input_step_answered_with_a_huge_exponent_asks_again_quickly(project, user):
    """Old code: int(Decimal("1e99999999")) ran for minutes holding the GIL."""
    _ask_number(project)
    command(user, "start")
    started = time.perf_counter()
    reply = texts(text(user, "1e99999999"))
    assert time.perf_counter() - started < 2
    assert reply == ["That does not look right: the number is too large (at most 30 digits)."]
    assert not UserVariable.objects.filter(user=user, key="count").exists()
    assert WorkflowExecution.objects.get().status == WorkflowExecution.Status.WAITING
    assert texts(text(user, "42")) == ["Got 42"]


def test_a_bonus_with_an_absurd_templated_amount_fails_cleanly_for_the_operator(project, user):
    UserVariable.objects.create(user=user, key="price", value="1e99999999")
    publish(
        project,
        {
            "start": "menu",
            "steps": {
                "menu": {
                    "type": "message",
                    "text": "Shop",
                    "buttons": [[{"text": "Go", "next": "op"}]],
                },
                "op": {
                    "type": "bonus",
                    "operation": "earn",
                    "amount": "{{ vars.price }}",
                    "on_success": "ok",
                },
                "ok": {"type": "message", "text": "Done"},
            },
        },
    )
    go = buttons(command(user, "start"))["Go"]
    started = time.perf_counter()
    assert texts(press(user, go)) == [project.fallback_message]
    assert time.perf_counter() - started < 2
    execution = WorkflowExecution.objects.get()
    assert execution.status == WorkflowExecution.Status.FAILED
    assert "the amount '1e99999999' is too large" in execution.error
    assert not BonusTransaction.objects.exists()


def test_a_bonus_amount_beyond_the_ledger_maximum_is_refused_at_publish_and_at_run(project, user):
    """Old code published 10**13 and handed 10**20 to the ledger (a bare ValueError)."""
    too_big = {"start": "op", "steps": {"op": {"type": "bonus", "operation": "earn"}}}
    too_big["steps"]["op"]["amount"] = 10**13
    try:
        workflow_validate(too_big)
    except WorkflowValidationError as exc:
        assert "'amount' must be at most 1000000000000 bonuses" in str(exc)
    else:
        raise AssertionError("an amount beyond the ledger's maximum was published")
    UserVariable.objects.create(user=user, key="price", value="100000000000000000000")
    publish(
        project,
        {
            "start": "op",
            "steps": {
                "op": {"type": "bonus", "operation": "earn", "amount": "{{ vars.price }}"},
            },
        },
    )
    command(user, "start")
    execution = WorkflowExecution.objects.get()
    assert execution.status == WorkflowExecution.Status.FAILED
    assert "Step 'op' (bonus) failed: the amount 100000000000000000000 is larger than the " in (
        execution.error
    )
    assert not BonusTransaction.objects.exists()


def test_set_variable_increment_by_an_absurd_templated_number_fails_cleanly(project, user):
    UserVariable.objects.create(user=user, key="step", value="-1e1000000")
    UserVariable.objects.create(user=user, key="visits", value=5)
    publish(
        project,
        {
            "start": "inc",
            "steps": {
                "inc": {
                    "type": "set_variable",
                    "variable": "visits",
                    "operation": "increment",
                    "value": "{{ vars.step }}",
                },
            },
        },
    )
    started = time.perf_counter()
    assert texts(command(user, "start")) == [project.fallback_message]
    assert time.perf_counter() - started < 2
    execution = WorkflowExecution.objects.get()
    assert execution.status == WorkflowExecution.Status.FAILED
    assert "'-1e1000000' is too large" in execution.error
    assert UserVariable.objects.get(user=user, key="visits").value == 5  # nothing half-written
