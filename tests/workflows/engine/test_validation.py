from __future__ import annotations

import pytest

from workflows.engine.validation import WorkflowValidationError, workflow_validate


def errors_of(definition, **kwargs) -> list[tuple[str, str]]:
    with pytest.raises(WorkflowValidationError) as info:
        workflow_validate(definition, **kwargs)
    return [(e.step, e.message) for e in info.value.errors]


def has(errors, step, fragment) -> bool:
    return any(s == step and fragment in m for s, m in errors)


def test_a_valid_workflow_passes():
    workflow_validate(
        {
            "start": "ask",
            "steps": {
                "ask": {"type": "input", "text": "City?", "variable": "city", "next": "check"},
                "check": {
                    "type": "condition",
                    "branches": [{"if": 'vars.city == "Paris"', "next": "paris"}],
                    "default": "menu",
                },
                "paris": {"type": "message", "text": "Bonjour", "next": "menu"},
                "menu": {
                    "type": "message",
                    "text": "Again?",
                    "buttons": [
                        [
                            {"text": "Yes", "next": "ask"},
                            {"text": "Site", "url": "https://example.com"},
                        ]
                    ],
                },
            },
        },
        triggers=[{"type": "command", "command": "start"}],
    )


def test_missing_step_reference():
    errors = errors_of(
        {"start": "a", "steps": {"a": {"type": "message", "text": "x", "next": "b"}}}
    )
    assert has(errors, "a", "points to the step 'b', which does not exist")


def test_start_must_exist():
    errors = errors_of({"start": "nope", "steps": {"a": {"type": "end"}}})
    assert has(errors, "", "'start' names the step 'nope'")


def test_button_without_target():
    errors = errors_of(
        {
            "start": "a",
            "steps": {"a": {"type": "message", "text": "x", "buttons": [[{"text": "Lost"}]]}},
        }
    )
    assert has(errors, "a", "button 1 ('Lost') has no target")


def test_unreachable_step():
    errors = errors_of({"start": "a", "steps": {"a": {"type": "end"}, "orphan": {"type": "end"}}})
    assert has(errors, "orphan", "unreachable")


def test_cycle_that_never_waits():
    errors = errors_of(
        {
            "start": "a",
            "steps": {
                "a": {"type": "message", "text": "x", "next": "b"},
                "b": {
                    "type": "set_variable",
                    "variable": "n",
                    "operation": "increment",
                    "value": 1,
                    "next": "a",
                },
            },
        }
    )
    assert has(errors, "a", "loop that never waits")


def test_cycle_through_a_wait_is_fine():
    workflow_validate(
        {
            "start": "a",
            "steps": {
                "a": {
                    "type": "message",
                    "text": "x",
                    "buttons": [[{"text": "Again", "next": "b"}]],
                },
                "b": {
                    "type": "set_variable",
                    "variable": "n",
                    "operation": "increment",
                    "value": 1,
                    "next": "a",
                },
            },
        }
    )


def test_unknown_variable_in_condition():
    errors = errors_of(
        {
            "start": "c",
            "steps": {
                "c": {
                    "type": "condition",
                    "branches": [{"if": "balance > 5", "next": "e"}],
                    "default": "e",
                },
                "e": {"type": "end"},
            },
        }
    )
    assert has(errors, "c", "branch 1 condition: unknown variable 'balance'")


def test_template_that_does_not_parse():
    errors = errors_of(
        {"start": "a", "steps": {"a": {"type": "message", "text": "Hi {{ user.first_name"}}}
    )
    assert has(errors, "a", "never closed")


def test_text_longer_than_telegram_allows():
    errors = errors_of({"start": "a", "steps": {"a": {"type": "message", "text": "x" * 4097}}})
    assert has(errors, "a", "Telegram allows at most 4096")


def test_callback_data_over_64_bytes():
    errors = errors_of(
        {
            "start": "a",
            "steps": {
                "a": {
                    "type": "message",
                    "text": "x",
                    "buttons": [[{"text": "B", "data": "é" * 33}]],
                }
            },
        },
        triggers=[{"type": "callback", "data": "x" * 65}],
    )
    assert has(errors, "a", "66 bytes")
    assert has(errors, "trigger 1", "longer than 64 bytes")


def test_unknown_step_type_and_bad_fields():
    errors = errors_of(
        {
            "start": "a",
            "steps": {
                "a": {"type": "teleport", "next": "b"},
                "b": {
                    "type": "input",
                    "text": "?",
                    "variable": "balance",
                    "validate": {"type": "regex", "pattern": "("},
                },
            },
        }
    )
    assert has(errors, "a", "unknown step type 'teleport'")
    assert has(errors, "b", "managed by the loyalty programme")
    assert has(errors, "b", "not a valid regular expression")


def test_trigger_problems_and_missing_workflow_for_jump():
    errors = errors_of(
        {"start": "j", "steps": {"j": {"type": "start_workflow", "workflow": "ghost"}}},
        triggers=[
            {"type": "command", "command": "sta rt"},
            {"type": "regex", "pattern": "["},
            {"type": "magic"},
        ],
        known_workflows={"menu"},
    )
    assert has(errors, "trigger 1", "'command'")
    assert has(errors, "trigger 2", "not a regular expression")
    assert has(errors, "trigger 3", "'type' must be one of")
    assert has(errors, "j", "no workflow 'ghost'")


def test_every_step_type_reports_its_own_field_errors():
    errors = errors_of(
        {
            "start": "a",
            "steps": {
                "a": {"type": "bonus", "operation": "steal", "amount": 0, "next": "b"},
                "b": {
                    "type": "http_request",
                    "url": "ftp://x",
                    "timeout": 500,
                    "next": "c",
                    "on_success": "c",
                },
                "c": {"type": "delay", "next": "d"},
                "d": {"type": "set_variable", "variable": "1bad", "operation": "set"},
            },
        }
    )
    assert has(errors, "a", "'operation' must be one of")
    assert has(errors, "b", "'url' must start with")
    assert has(errors, "b", "'timeout' must be a number from 1 to 60")
    assert has(errors, "c", "give the duration")
    assert has(errors, "d", "'variable'")
    assert has(errors, "d", "'value' is missing")
