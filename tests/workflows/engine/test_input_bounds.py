"""Issue 17's input bugs: a date input with min after max published; the regex
``message`` was shown with a prefix and a doubled period."""

from __future__ import annotations

import pytest

from tests.workflows.conftest import command, publish, text, texts
from workflows.engine.validation import WorkflowValidationError, workflow_validate


def _ask(validate: dict) -> dict:
    return {
        "start": "ask",
        "steps": {
            "ask": {"type": "input", "text": "?", "variable": "v", "validate": validate},
        },
    }


@pytest.mark.parametrize(
    ("validate", "fragment"),
    [
        (
            {"type": "date", "min": "2030-01-01", "max": "today"},
            "'validate.min' (2030-01-01) is later than 'validate.max' (today)",
        ),
        ({"type": "number", "min": 10, "max": 5}, "'validate.min' (10) is greater than"),
        ({"type": "text", "min": 3, "max": 2}, "no answer could pass; swap them"),
    ],
)
def test_min_past_max_is_refused_at_publish(validate, fragment):
    with pytest.raises(WorkflowValidationError) as info:
        workflow_validate(_ask(validate))
    assert fragment in str(info.value)


def test_equal_bounds_still_publish():
    workflow_validate(_ask({"type": "date", "min": "2000-01-01", "max": "2000-01-01"}))


def test_the_regex_message_is_shown_as_written(project, user):
    publish(
        project,
        _ask({"type": "regex", "pattern": r"\d{4}", "message": "Send your 4-digit order number."}),
    )
    command(user, "start")
    assert texts(text(user, "abc")) == ["Send your 4-digit order number."]


def test_the_standard_explanation_has_one_period(project, user):
    publish(project, _ask({"type": "number"}))
    command(user, "start")
    assert texts(text(user, "abc")) == ["That does not look right: please send a number."]
