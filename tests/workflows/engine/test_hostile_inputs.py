"""Operator patterns and user answers: refused at publish, time-bounded when run.

Old code: publishing only compiled the pattern, and ``re.fullmatch`` of
``^([A-Z0-9]+-?)+$`` against 39 ``A``s and a ``!`` would run for hours (24 ``A``s
already take about 2 s), holding the GIL.
"""

from __future__ import annotations

import logging
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from botplatform.conversation import InputEvent
from tests.workflows.conftest import command, publish, text, texts
from users.models import UserVariable
from workflows.engine import patterns
from workflows.engine.steps.input import KINDS, MAX_PATTERN_ANSWER, Invalid, answer_validate
from workflows.engine.triggers import trigger_match
from workflows.engine.validation import WorkflowValidationError, workflow_validate
from workflows.models import WorkflowExecution

RUNAWAY = r"^([A-Z0-9]+-?)+$"
# Slow even for the regex package (it has no shortcut for a counted lazy repeat).
SLOW_FOR_REGEX = r"^(.*?,){30}P"


def _ask(pattern: str) -> dict:
    return {
        "start": "ask",
        "steps": {
            "ask": {
                "type": "input",
                "text": "Your code?",
                "variable": "code",
                "validate": {"type": "regex", "pattern": pattern, "message": "like AB-12"},
                "next": "ok",
            },
            "ok": {"type": "message", "text": "Saved"},
        },
    }


def _problems(definition: dict, triggers=None) -> str:
    try:
        workflow_validate(definition, triggers=triggers)
    except WorkflowValidationError as exc:
        return str(exc)
    return ""


@pytest.mark.parametrize("pattern", [RUNAWAY, r"(a+)+", r"(a|aa)*", r"^(\w+\s?)*$", SLOW_FOR_REGEX])
def test_patterns_that_backtrack_exponentially_are_refused_at_publish(pattern):
    problems = _problems(_ask(pattern))
    assert "ask: 'validate.pattern': the pattern repeats" in problems
    assert "the bot stops answering" in problems


def test_a_runaway_regex_trigger_is_refused_at_publish():
    definition = {"start": "e", "steps": {"e": {"type": "end"}}}
    problems = _problems(definition, triggers=[{"type": "regex", "pattern": RUNAWAY}])
    assert "trigger 1: 'pattern': the pattern repeats a part that itself repeats" in problems
    # The check is not a blanket ban: ordinary patterns, including repeated groups of
    # fixed length and alternatives that start differently, are published.
    for fine in [r"^[A-Z]{2}\d{4}$", r"^\d{5}(-\d{4})?$", r"(\d{3}-)+\d", r"^(?:foo|bar)+$"]:
        assert _problems(_ask(fine), triggers=[{"type": "regex", "pattern": fine}]) == ""


def test_a_stored_runaway_pattern_answers_within_the_time_bound():
    """A version published before the check still cannot freeze the runner."""
    for answer in ["A" * 24 + "!", "A" * 39 + "!"]:
        started = time.perf_counter()
        with pytest.raises(Invalid, match="like AB-12"):
            answer_validate({"type": "regex", "pattern": RUNAWAY, "message": "like AB-12"}, answer)
        assert time.perf_counter() - started < 1


def test_a_pattern_that_runs_out_of_time_is_no_match_and_is_logged(caplog):
    answer = "a," * 100
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="workflows.engine.patterns"):
        with pytest.raises(Invalid):
            answer_validate({"type": "regex", "pattern": SLOW_FOR_REGEX}, answer)
        assert patterns.pattern_search(SLOW_FOR_REGEX, answer) is False
    assert time.perf_counter() - started < 2 + 2 * patterns.TIMEOUT
    assert "counted as no match" in caplog.text and "^(.*?,){30}P" in caplog.text


def test_a_runaway_regex_trigger_is_no_match_within_the_time_bound():
    candidates = [
        {
            "id": 1,
            "slug": "codes",
            "published_version_id": 1,
            "triggers": [{"type": "regex", "pattern": RUNAWAY, "ignore_case": False}],
        }
    ]
    started = time.perf_counter()
    event = InputEvent(kind="text", text="A" * 30 + "!")
    assert trigger_match(candidates, event) is None
    assert time.perf_counter() - started < 1  # old code (re.search): about a minute
    assert trigger_match(candidates, InputEvent(kind="text", text="AB-12")) is not None


def test_answers_checked_by_a_pattern_are_capped():
    rule = {"type": "regex", "pattern": r"^[a-z]+$"}
    assert answer_validate(rule, "a" * MAX_PATTERN_ANSWER) == "a" * MAX_PATTERN_ANSWER
    with pytest.raises(Invalid, match=f"longer than {MAX_PATTERN_ANSWER} characters"):
        answer_validate(rule, "a" * (MAX_PATTERN_ANSWER + 1))


def test_a_user_answering_a_stored_runaway_pattern_is_asked_again_quickly(project, user):
    workflow = publish(project, _ask(r"^[A-Z]{2}-\d{2}$"))
    # Simulate a version published before the check: the stored pattern is the runaway one.
    version = workflow.published_version
    version.definition["steps"]["ask"]["validate"]["pattern"] = RUNAWAY
    version.save(update_fields=["definition"])
    command(user, "start")
    started = time.perf_counter()
    reply = texts(text(user, "A" * 39 + "!"))
    assert time.perf_counter() - started < 2
    assert reply == ["like AB-12"]  # the operator's message as written (issue 17)
    # Only the stored (runaway) pattern accepts this answer: it is the one in use.
    assert texts(text(user, "ABCD-1")) == ["Saved"]
    assert UserVariable.objects.get(user=user, key="code").value == "ABCD-1"
    assert WorkflowExecution.objects.get().status == WorkflowExecution.Status.COMPLETED


hostile_text = st.one_of(
    st.text(max_size=1500),
    st.text("0123456789+-() .,e@\x00\ud800", max_size=200),
    st.builds(lambda n, c: c * n, st.integers(0, 3000), st.sampled_from(["A", "1", "\x00", "{{"])),
)
rules = st.sampled_from(
    [{"type": kind} for kind in KINDS if kind != "regex"]
    + [
        {"type": "regex", "pattern": RUNAWAY},
        {"type": "regex", "pattern": SLOW_FOR_REGEX},
        {"type": "date", "min": "1900-01-01", "max": "today"},
        {"type": "text", "min": 2, "max": 50},
        {"type": "number", "min": 0, "max": 100},
    ]
)


@settings(max_examples=200, deadline=None)
@given(rules, hostile_text)
def test_every_validator_answers_any_text_with_a_value_or_invalid(rule, answer):
    started = time.perf_counter()
    try:
        answer_validate(rule, answer)
    except Invalid as exc:
        assert str(exc)
    assert time.perf_counter() - started < 1 + patterns.TIMEOUT
