"""Hostile input for issue 17's new reads: a regex trigger's captures, an HTTP answer's
status, headers and save paths, and typed body values. Bounded, never an exception."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from botplatform.conversation import InputEvent
from workflows.engine.patterns import MAX_GROUP_TEXT, MAX_GROUPS, pattern_captures
from workflows.engine.steps.http_request import (
    _render_tree,
    json_pick,
    save_path_warnings,
    status_target,
)
from workflows.engine.triggers import MAX_TRIGGER_TEXT, trigger_context

odd_text = st.one_of(
    st.text(max_size=300),
    st.sampled_from(["\x00" * 50, "\ud800" * 20, "\u202e\ufeff" * 30, "9" * 6000, "é" * 5000]),
)


@settings(max_examples=200, deadline=None)
@given(odd_text, st.sampled_from([r"(\d+)", r"(?P<order>\w+)", "(.)" * 40, r"(a|b)*c", "(", ""]))
def test_captures_are_bounded_and_never_raise(text, pattern):
    started = time.perf_counter()
    captures = pattern_captures(pattern, text)
    assert time.perf_counter() - started < 1
    if captures is not None:
        assert len(captures) <= 2 * MAX_GROUPS + 1
        assert all(len(value) <= MAX_GROUP_TEXT for value in captures.values())
    context = trigger_context(
        {"type": "regex", "pattern": pattern}, InputEvent(kind="text", text=text)
    )
    assert len(context["text"]) <= MAX_TRIGGER_TEXT and isinstance(context["match"], dict)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), odd_text),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(json_values, st.text(max_size=60), st.one_of(st.integers(), st.none(), st.text(max_size=5)))
def test_answers_paths_and_statuses_never_raise(document, path, status):
    json_pick(document, path or "x")
    on_status = {"404": "a", "5xx": "b", str(status)[:5]: "c"}
    target = status_target(on_status, status)
    assert target in {None, "a", "b", "c"}
    warnings = save_path_warnings({"save": {"v": path or "x"}, "example_response": document})
    assert all(isinstance(w, str) and len(w) < 1000 for w in warnings)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_a_typed_body_value_is_the_variable_as_it_is(value):
    context = {"user": {}, "vars": {"v": value}, "bot": {}}
    rendered = _render_tree({"v": "{{ vars.v }}", "t": "{{ vars.v | text }}"}, context)
    assert isinstance(rendered["t"], str)
    if value is None or isinstance(value, bool | int | float | list):
        assert rendered["v"] == value or (isinstance(value, float) and value != value)
