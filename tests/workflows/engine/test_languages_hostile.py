"""Per-language texts an operator (or a paste accident) writes: odd keys, huge objects,
NUL bytes, wrong value types. Publishing says what is wrong, in a sentence naming the
field and the language, or accepts; nothing else escapes. Resolution always yields one
of the given texts."""

from __future__ import annotations

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from botplatform.languages import (
    MAX_LANGUAGES,
    language_list,
    normalize_code,
    pick_text,
    user_language,
)
from workflows.engine.schema import workflow_schema
from workflows.engine.validation import WorkflowValidationError, workflow_validate

odd_keys = st.one_of(
    st.sampled_from(["en", "ru", "pt-br", "EN", "english", "", " ", "en\x00", "\x00", "r"]),
    st.sampled_from(["zh-hans", "e" * 500, "ru-RU", "ru_ru", "\u202eur", "\u0440\u0443", "1en"]),
    st.text(max_size=12),
)
odd_values = st.one_of(
    st.text(max_size=50),
    st.sampled_from(["{{ oops", "{{ user.first_name }}", "\x00", "\ud800", "x" * 5000]),
    st.integers(),
    st.none(),
    st.lists(st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)
per_language = st.dictionaries(odd_keys, odd_values, max_size=25)


def _publish(text) -> list[str]:
    definition = {
        "start": "a",
        "steps": {
            "a": {
                "type": "message",
                "text": text,
                "buttons": [{"text": text, "next": "b"}],
            },
            "b": {"type": "input", "text": text, "retry_text": text, "variable": "v"},
        },
    }
    try:
        workflow_validate(definition)
    except WorkflowValidationError as exc:
        return [str(error) for error in exc.errors]
    return []


def _valid(text: dict) -> bool:
    return (
        0 < len(text) <= MAX_LANGUAGES
        and all(normalize_code(key) == key for key in text)
        and all(isinstance(value, str) and value.strip() for value in text.values())
    )


@settings(max_examples=150, deadline=None)
@given(per_language)
def test_any_per_language_object_publishes_or_says_why(text):
    problems = _publish(text)
    if not _valid(text):
        assert problems, text
    for problem in problems:
        assert problem.startswith(("a: ", "b: ")), problem
        assert "Traceback" not in problem and len(problem) < 400, problem
    bad_keys = [k for k in text if normalize_code(k) != k]
    if bad_keys and len(text) <= MAX_LANGUAGES:
        assert any("is not a language code" in p for p in problems), (text, problems)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ({"EN": "Hi"}, "'EN' is not a language code"),
        ({"en\x00": "Hi"}, "'en\\x00' is not a language code"),
        ({}, "has no language"),
        ({"en": {"nested": "x"}}, "in 'en' must be a text"),
        ({f"a{chr(97 + i // 26)}{chr(97 + i % 26)}": "x" for i in range(5000)}, "at most 20"),
        ({"ru": "x" * 100_000}, "'text' (ru): the text is 100000 characters long"),
        ({"ru": "x" * 5000}, "'text' (ru) is 5000 characters long; Telegram allows at most 4096"),
        ({"en": "ok", "ru": "{{ oops"}, "'text' (ru): '{{' is opened but never closed"),
    ],
)
def test_clear_publish_errors(text, expected):
    problems = _publish(text)
    assert any(expected in problem for problem in problems), problems


def test_the_schema_takes_a_text_or_per_language_object():
    schema = workflow_schema()

    def file(text) -> dict:
        step = {"type": "message", "text": text, "buttons": [{"text": text, "next": "a"}]}
        return {"slug": "x", "definition": {"start": "a", "steps": {"a": step}}}

    jsonschema.validate(file("Hi"), schema)
    jsonschema.validate(file({"en": "Hi", "ru": "Привет", "pt-br": "Oi"}), schema)
    for bad in ({"EN": "Hi"}, {}, {"en": 1}, {"en\x00": "Hi"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(file(bad), schema)


@settings(max_examples=200, deadline=None)
@given(
    per_language,
    st.sampled_from(["en", "ru", "ru-ru", "de", "", "pt-br"]),
    st.sampled_from(["en", "ru", "de"]),
    st.lists(st.sampled_from(["en", "ru", "de", "pt"]), max_size=4),
)
def test_pick_text_returns_one_of_the_versions(text, language, default, spoken):
    picked = pick_text(text, language, default, spoken)
    texts = [value for key, value in text.items() if isinstance(value, str)]
    assert picked in texts or (picked == "" and not texts)
    if isinstance(text.get(language), str):
        assert picked == text[language]
    elif isinstance(text.get(default), str) and not isinstance(
        text.get(language.split("-")[0]), str
    ):
        assert picked == text[default]


def test_pick_text_fallback_order():
    text = {"de": "Hallo", "ru": "Привет", "en": "Hello"}
    assert pick_text(text, "ru", "en") == "Привет"
    assert pick_text(text, "ru-ru", "en") == "Привет"
    assert pick_text(text, "fr", "en") == "Hello"
    assert pick_text({"de": "Hallo", "ru": "Привет"}, "fr", "en", ["en", "ru"]) == "Привет"
    assert pick_text({"ru": "Привет", "de": "Hallo"}, "fr", "en") == "Hallo"  # alphabetical
    assert pick_text("plain", "ru", "en") == "plain"


def test_user_language_prefers_the_choice_then_telegram_then_default():
    spoken = language_list("ru, en, RU, bad code", "en")
    assert spoken == ["en", "ru"]
    assert user_language("ru", "en", spoken, "en") == "ru"
    assert user_language("", "ru-RU", spoken, "en") == "ru"
    assert user_language("", "de", spoken, "en") == "en"
    assert user_language("xx\x00", "\x00", spoken, "en") == "en"
    assert user_language("", "ru", [], "en") == "en"  # the project speaks only its default
