"""Templates an operator (or a paste accident) writes: linear checks, bounded size.

The old tag regex was quadratic on unclosed ``{{``: 20,000 characters of them took
over 6 s to check. Time bounds below are hundreds of times what the linear parser
needs.
"""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from workflows.engine.templating import (
    MAX_TEMPLATE,
    TemplateError,
    template_check,
    template_parse,
    template_render,
)

CONTEXT = {
    "user": {"first_name": "Ann\x00", "balance": 10**40},
    "vars": {"x": "1e99999999", "s": "\ud800" * 10, "n": 12.5, "deep": {"a": {"b": "c"}}},
    "bot": {"username": "demo_bot"},
}

# Template-ish text: braces, pipes, quotes, filter names and the odd hostile character.
filter_with_argument = st.builds(
    "{{{{ vars.n | {}:{} }}}}".format,
    st.sampled_from(["number", "round", "truncate", "plural", "default"]),
    st.one_of(
        st.integers(min_value=-(10**6), max_value=10**6).map(str),
        st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n),
        st.text(alphabet="abc 1.\\", max_size=10).map(lambda t: f'"{t}"'),
    ),
)
template_like = st.lists(
    st.one_of(
        st.sampled_from(["{{", "}}", "{", "}", "|", ":", '"', "'", "\\", ".", " ", "\n"]),
        st.sampled_from(["user.first_name", "vars.x", "vars.n", "number", "round:2", "truncate"]),
        st.sampled_from(["default:", "upper", "99999999999999999999999999999999999", "-1"]),
        st.characters(codec="utf-8"),
        st.sampled_from(["\x00", "\ud800", "\u202e", "\ufeff"]),
    ),
    max_size=120,
).map("".join)
template_like = st.one_of(template_like, filter_with_argument)


def test_unclosed_braces_are_checked_in_linear_time():
    source = "{{" * (MAX_TEMPLATE // 2 - 1)
    started = time.perf_counter()
    problem = template_check(source)
    assert time.perf_counter() - started < 1  # old code: more than 6 s
    assert problem == "'{{' is opened but never closed with '}}'"


def test_a_template_longer_than_the_limit_is_refused_with_its_length():
    problem = template_check("Hello " * 6000)
    assert problem == f"the text is 36000 characters long; at most {MAX_TEMPLATE} are allowed"


def test_a_filter_argument_with_thousands_of_digits_is_a_template_error():
    """Old code: int() of 5,000 digits raised a bare ValueError out of the check."""
    problem = template_check("{{ vars.x | truncate:" + "9" * 5000 + " }}")
    assert problem is not None and "too long" in problem


def test_a_filter_with_a_text_argument_where_a_number_belongs_still_renders():
    """Old code: int("abc") raised ValueError while rendering (the step crashed)."""
    assert template_render('{{ vars.s2 | truncate:"abc" }}', {"vars": {"s2": "x" * 60}}) == (
        "x" * 49 + "…"
    )
    assert template_render('{{ vars.n | round:"x" }}', CONTEXT) == "13"


@settings(max_examples=200, deadline=None)
@given(template_like)
def test_any_template_text_is_accepted_or_refused_with_a_template_error(source):
    started = time.perf_counter()
    problem = template_check(source)
    assert problem is None or isinstance(problem, str)
    if problem is None:
        out = template_render(source, CONTEXT)
        assert isinstance(out, str) and len(out) <= 20_000
    else:
        try:
            template_parse(source)
        except TemplateError:
            pass
        else:
            raise AssertionError("check and parse disagree")
    assert time.perf_counter() - started < 1


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["{{", "}}", "{{ vars.x", "{{ vars.x }}", "{", "|"]),
    st.integers(min_value=1, max_value=MAX_TEMPLATE // 2),
)
def test_repeated_fragments_up_to_the_size_limit_stay_fast(fragment, count):
    source = (fragment * count)[:MAX_TEMPLATE]
    started = time.perf_counter()
    if template_check(source) is None:
        template_render(source, CONTEXT)
    assert time.perf_counter() - started < 1
