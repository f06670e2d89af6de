"""The changes between versions read as the operator's words: steps, fields, triggers."""

from __future__ import annotations

import json
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workflows.version_diff import FieldChange, trigger_text, version_diff

OLD = {
    "start": "menu",
    "steps": {
        "menu": {
            "type": "message",
            "text": "Hello!\nWhat would you like?",
            "buttons": [[{"text": "Coffee", "next": "coffee"}]],
        },
        "coffee": {"type": "message", "text": "Espresso: 2 €"},
        "old_promo": {"type": "end"},
    },
}
NEW = {
    "start": "menu",
    "steps": {
        "menu": {
            "type": "message",
            "text": "Hello!\nCoffee or tea?",
            "buttons": [
                [{"text": "Coffee", "next": "coffee"}, {"text": "Tea", "next": "tea"}],
                [{"text": "Site", "url": "https://cafe.example"}],
            ],
            "timeout": 600,
        },
        "coffee": {"type": "message", "text": "Espresso: 2 €"},
        "tea": {"type": "bonus", "operation": "earn", "amount": 5, "next": "coffee"},
    },
}


def test_steps_added_removed_and_changed_with_old_and_new_text_per_field():
    diff = version_diff(OLD, [], NEW, [])
    by_step = {change.step: change for change in diff.steps}
    assert {step: change.kind for step, change in by_step.items()} == {
        "tea": "added",
        "old_promo": "removed",
        "menu": "changed",
    }
    menu = by_step["menu"]
    assert menu.type_label == "Send a message"
    assert menu.fields == (
        # Real line breaks, no JSON quoting or escapes.
        FieldChange("Text", "Hello!\nWhat would you like?", "Hello!\nCoffee or tea?"),
        FieldChange(
            "Buttons",
            "[Coffee] → step coffee",
            "[Coffee] → step coffee   [Tea] → step tea\n[Site] → link https://cafe.example",
        ),
        FieldChange("Wait at most (seconds)", "", "600"),
    )
    tea = by_step["tea"]
    assert tea.type_label == "Bonuses: earn, spend, adjust"
    assert [(f.label, f.new) for f in tea.fields] == [
        ("Operation", "earn"),
        ("Amount", "5"),
        ("Otherwise go to", "coffee"),
    ]
    assert by_step["old_promo"].fields == ()
    assert "coffee" not in by_step  # unchanged steps are not listed
    assert diff.summary() == "1 step added; 1 step removed; 1 step changed"


def test_trigger_changes_are_described_as_the_editor_names_them():
    old = [{"type": "command", "command": "start", "interrupt": True}, {"type": "fallback"}]
    new = [
        {"type": "command", "command": "start", "interrupt": True},
        {"type": "text", "text": "coffee"},
        {"type": "callback", "prefix": "shop:"},
    ]
    diff = version_diff(OLD, old, OLD, new)
    assert diff.steps == ()
    assert diff.triggers_added == ("Exact text: coffee", "Button data starting with: shop:")
    assert diff.triggers_removed == ("Anything else (fallback)",)
    assert diff.summary() == "2 triggers added; 1 trigger removed"
    assert trigger_text({"type": "command", "command": "/start", "payload_prefix": "ref_"}) == (
        "Command /start with a deep-link payload starting with “ref_”"
    )
    assert trigger_text({"type": "regex", "pattern": "^hi", "ignore_case": False}) == (
        "Text matching the pattern: ^hi (case-sensitive)"
    )
    assert trigger_text({"type": "level_up"}) == "Reached any level"


def test_type_changes_first_step_and_unknown_fields_are_shown():
    old = {"start": "a", "steps": {"a": {"type": "end", "x_custom": {"k": 1}}}}
    new = {
        "start": "b",
        "steps": {
            "a": {"type": "message", "text": "Hi", "x_custom": {"k": 2}},
            "b": {"type": "end"},
        },
    }
    diff = version_diff(old, [], new, [])
    (changed,) = [c for c in diff.steps if c.kind == "changed"]
    labels = {f.label: (f.old, f.new) for f in changed.fields}
    assert labels["Type"] == ("End the conversation", "Send a message")
    assert labels["Text"] == ("", "Hi")
    assert labels["x_custom"] == ('{\n  "k": 1\n}', '{\n  "k": 2\n}')
    assert diff.general == (FieldChange("First step", "a", "b"),)


def test_the_first_version_is_all_additions_and_an_unchanged_one_is_empty():
    first = version_diff(None, [], OLD, [{"type": "command", "command": "start"}])
    assert [c.kind for c in first.steps] == ["added"] * 3
    assert first.triggers_added == ("Command /start",) and first.general == ()
    assert first.summary() == "3 steps added; 1 trigger added"
    same = version_diff(OLD, [], json.loads(json.dumps(OLD)), [])
    assert same.is_empty and same.summary() == "no changes"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON, JSON, JSON, JSON)
def test_any_json_gives_a_diff_never_an_error(old_def, old_triggers, new_def, new_triggers):
    """Definitions are operator JSON (the advanced editor, imports): anything goes in."""
    diff = version_diff(old_def, old_triggers, new_def, new_triggers)
    assert isinstance(diff.summary(), str)
    for change in diff.steps:
        assert all(isinstance(f.old, str) and isinstance(f.new, str) for f in change.fields)


def test_hostile_values_stay_bounded_and_readable():
    huge = "x" * 200_000
    nested: dict = {}
    cursor = nested
    for _ in range(200):
        cursor["n"] = {}
        cursor = cursor["n"]
    old = {"start": "a", "steps": {"a": {"type": "message", "text": "hi"}}}
    new = {
        "start": "a",
        "steps": {
            "a": {"type": "message", "text": huge + "\x00\u202e", "x": nested},
            "\x00odd\u0301": {"type": "end"},
        },
        "description": "\U0001f600" * 10,
    }
    started = time.monotonic()
    diff = version_diff(old, [{"type": "text", "text": "\x00"}], new, [{"bogus": huge}])
    assert time.monotonic() - started < 2
    (changed,) = [c for c in diff.steps if c.kind == "changed"]
    text = next(f for f in changed.fields if f.label == "Text")
    assert len(text.new) < 4100 and text.new.endswith("more characters)")
    assert diff.triggers_removed == ("Exact text: \x00",)
    assert len(diff.triggers_added[0]) < 4100
