"""Each step type carries its contract; the schema file and the validator come from it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from workflows.engine.schema import workflow_schema, workflow_schema_text
from workflows.engine.steps import STEP_TYPES
from workflows.engine.validation import StepError, WorkflowValidationError, workflow_validate
from workflows.management.commands import workflowschema

ROOT = Path(__file__).resolve().parents[3]
WIDGETS = {
    "template",
    "line",
    "int",
    "number",
    "bool",
    "step",
    "choice",
    "workflow",
    "keyboard",
    "pairs",
    "json",
    "amount",
    "value",
    "buttons",
    "branches",
}


def errors_of(definition, **kwargs) -> list[tuple[str, str]]:
    with pytest.raises(WorkflowValidationError) as info:
        workflow_validate(definition, **kwargs)
    return [(error.step, error.message) for error in info.value.errors]


# --- The registry and the file ------------------------------------------------------


def test_the_committed_schema_file_is_the_generated_one():
    committed = (ROOT / "docs" / "workflow.schema.json").read_text(encoding="utf-8")
    assert committed == workflow_schema_text(), (
        "docs/workflow.schema.json is stale: run `manage.py workflowschema --write`"
    )


def test_the_generated_schema_is_a_valid_json_schema():
    Draft202012Validator.check_schema(workflow_schema())


def test_workflowschema_check_fails_on_a_stale_file_and_write_fixes_it(tmp_path, monkeypatch):
    target = tmp_path / "workflow.schema.json"
    target.write_text('{"stale": true}\n')
    monkeypatch.setattr(workflowschema, "SCHEMA_FILE", target)
    with pytest.raises(CommandError, match="out of date"):
        call_command("workflowschema", "--check", stderr=io.StringIO())
    call_command("workflowschema", "--write", stderr=io.StringIO())
    assert target.read_text() == workflow_schema_text()
    call_command("workflowschema", "--check", stderr=io.StringIO())
    out = io.StringIO()
    call_command("workflowschema", stdout=out)
    assert json.loads(out.getvalue())["title"] == "Workflow file"


@pytest.mark.parametrize("name", list(STEP_TYPES))
def test_every_step_type_declares_its_contract(name):
    handler = STEP_TYPES[name]
    assert handler.label and handler.description
    assert handler.fields, f"{name} declares no fields"
    names = [spec.name for spec in handler.fields]
    assert len(names) == len(set(names)), f"{name} declares a field twice"
    assert "description" in names  # every step may carry an operator's note
    for spec in handler.editor_fields():
        assert spec.label, (name, spec.name)
        assert spec.kind in WIDGETS, (name, spec.name, spec.kind)
        assert bool(spec.choices) == (spec.kind == "choice"), (name, spec.name)
    # Every field that names another step is a step reference in the schema.
    steps_named = {spec.name for spec in handler.fields if spec.kind == "step"}
    assert set(handler.target_fields) <= steps_named, name
    schema = workflow_schema()["$defs"][f"step_{name}"]
    assert schema["title"] == handler.label and schema["description"] == handler.description
    assert set(schema["properties"]) == {"type", *names}


def test_a_field_declared_on_a_step_type_reaches_the_editor_and_the_schema(monkeypatch):
    from workflows.editor import editor_context
    from workflows.engine.steps.base import FieldSpec

    end = STEP_TYPES["end"]
    extra = FieldSpec("mood", "line", "Mood", "How the bot feels.", schema={"type": "string"})
    monkeypatch.setattr(type(end), "fields", (*end.fields, extra))
    context = editor_context(
        definition={"start": "a", "steps": {"a": {"type": "end", "mood": "calm"}}},
        triggers=[],
        workflows=[],
    )
    (field,) = [f for f in context["cards"][0]["fields"] if f["label"] == "Mood"]
    assert field["help"] == "How the bot feels." and 'value="calm"' in field["widget"]
    assert workflow_schema()["$defs"]["step_end"]["properties"]["mood"] == {
        "type": "string",
        "title": "Mood",
        "description": "How the bot feels.",
    }


def test_the_editor_offers_every_step_type_with_its_label():
    from workflows.editor import editor_context

    context = editor_context(
        definition={"start": "a", "steps": {"a": {"type": "end"}}}, triggers=[], workflows=[]
    )
    assert context["step_types"] == [(name, h.label) for name, h in STEP_TYPES.items()]


# --- Shape problems at publish time --------------------------------------------------


def test_a_step_that_breaks_the_schema_is_refused_naming_step_and_field():
    errors = errors_of(
        {
            "start": "ask",
            "steps": {
                "ask": {
                    "type": "input",
                    "text": "Age?",
                    "variable": "age",
                    "max_attempts": 0,
                    "validate": {"type": "integer", "maximum": 120},
                    "next": "done",
                },
                "done": {
                    "type": "message",
                    "text": "Thanks",
                    "edit": "yes",
                    "nxt": "ask",
                },
            },
        }
    )
    assert ("ask", "'max_attempts' must be a whole number of at least 1") in errors
    assert (
        "ask",
        "'validate': unknown field 'maximum' (known: type, min, max, pattern, message)",
    ) in errors
    assert ("done", "'edit' must be true or false") in errors
    assert any(
        step == "done" and message.startswith("unknown field 'nxt' (known: text, buttons")
        for step, message in errors
    )
    assert str(StepError("ask", errors[0][1])).startswith("ask: '")


def test_a_step_types_own_message_wins_over_the_schemas_about_one_field():
    errors = errors_of(
        {"start": "a", "steps": {"a": {"type": "set_variable", "variable": "balance"}}}
    )
    about_variable = [message for step, message in errors if "'variable'" in message]
    assert about_variable == [
        "'variable': 'balance' is managed by the loyalty programme; use a bonus step"
    ]


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"type": "delay", "hours": "two"}, "'hours' must be a number of at least 0"),
        ({"type": "http_request", "url": "https://x.example", "retries": 1.5}, "'retries' must be a whole number from 0 to 5"),
        ({"type": "message", "text": "x", "timeout": 0}, "'timeout' must be a number from 1 to 31622400"),
        ({"type": "input", "text": "?", "variable": "v", "timeout": 1e300}, "'timeout' must be a number from 1 to 31622400"),
        ({"type": "condition", "branches": [{"if": "1 == 1", "next": "a", "else": "a"}]}, "'branches' item 1: unknown field 'else' (known: if, next)"),
        ({"type": "message", "text": "x", "remove_keyboard": 1}, "'remove_keyboard' must be true or false"),
        ({"type": "end", "description": ["x"]}, "'description' must be a text"),
    ],
)  # fmt: skip
def test_shape_messages_say_what_the_field_must_be(step, message):
    assert ("a", message) in errors_of({"start": "a", "steps": {"a": step}})


def test_absurd_nesting_is_refused_before_anything_recurses_into_it():
    deep: list = []
    for _ in range(20_000):
        deep = [deep]
    errors = errors_of(
        {"start": "a", "steps": {"a": {"type": "http_request", "url": "https://x", "body": deep}}}
    )
    assert errors == [("", "the definition nests lists or objects more than 64 levels deep")]


# --- Hostile shapes -------------------------------------------------------------------

_texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", "\x00", "{{", "{{ vars.x }}", "🙂" * 3, "a\u202eb", "next", "type"]),
    st.builds(lambda char, n: char * n, st.characters(), st.integers(5_000, 50_000)),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    _texts,
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_texts, inner, max_size=4),
    max_leaves=25,
)
_field_names = sorted({spec.name for h in STEP_TYPES.values() for spec in h.fields})


@st.composite
def _steps(draw) -> dict:
    step_type = draw(st.sampled_from([*STEP_TYPES, "teleport"]) | _json)
    keys = draw(st.lists(st.sampled_from(_field_names) | _texts, max_size=6))
    step = {key: draw(_json) for key in keys}
    step["type"] = step_type
    return step


_definitions = st.one_of(
    _json,
    st.fixed_dictionaries(
        {
            "start": st.sampled_from(["a", "b"]) | _json,
            "steps": st.dictionaries(
                st.sampled_from(["a", "b", "c"]) | _texts, _steps(), max_size=4
            ),
        }
    ),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(definition=_definitions, triggers=st.none() | _json)
def test_any_json_shape_gives_readable_problems_never_an_exception(definition, triggers):
    try:
        workflow_validate(definition, triggers=triggers, known_workflows={"menu"})
    except WorkflowValidationError as exc:
        assert exc.errors
        for error in exc.errors:
            assert isinstance(error.step, str) and isinstance(error.message, str)
            assert error.message and "Traceback" not in error.message
            assert len(error.message) < 2_000, error.message[:200]
