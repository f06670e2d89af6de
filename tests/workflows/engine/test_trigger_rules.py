"""The trigger rules have one source: the schema (workflows/engine/schema.py).

The publish check (``triggers_problems``) accepts a trigger exactly when the file's
schema does, apart from what a schema cannot say (a regular expression that does not
compile or could run away, callback data over 64 bytes), for any input.
"""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from workflows.engine.schema import triggers_schema
from workflows.engine.validation import TRIGGER_TYPES, triggers_problems

VALIDATOR = Draft202012Validator(triggers_schema())
FIELDS = ["command", "payload", "payload_prefix", "interrupt", "text", "ignore_case"]
FIELDS += ["pattern", "data", "prefix", "level", "extra"]
TEXTS = st.one_of(
    st.sampled_from(["start", "/start", "sta rt", "", "  ", "w:1", "x" * 65, "é" * 40, "hi\x00"]),
    st.text(max_size=80),
)
VALUES = st.one_of(TEXTS, st.booleans(), st.integers(), st.none(), st.lists(st.integers()))
TRIGGERS = st.one_of(
    st.builds(
        lambda kind, extra: {"type": kind, **extra},
        st.sampled_from([*TRIGGER_TYPES, "magic"]),
        st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=4),
    ),
    VALUES,
)


def _only_python_can_say(trigger: dict) -> bool:
    if trigger.get("type") == "regex":
        return True  # compiled and checked for runaway repetition by patterns.py
    values = [trigger.get(name) for name in ("data", "prefix")]
    return any(isinstance(v, str) and len(v.encode()) > 64 for v in values)


@settings(max_examples=400, deadline=None)
@given(TRIGGERS)
def test_the_publish_check_agrees_with_the_schema(trigger):
    started = time.monotonic()
    problems = triggers_problems([trigger])
    assert time.monotonic() - started < 2
    schema_ok = VALIDATOR.is_valid(trigger)
    if not schema_ok:
        assert problems, f"the schema refuses {trigger!r}, the publish check accepts it"
        assert all(problem.step == "trigger 1" and problem.message for problem in problems)
    elif not (isinstance(trigger, dict) and _only_python_can_say(trigger)):
        assert problems == [], f"the schema accepts {trigger!r}, the check says {problems}"


def test_the_rules_the_schema_cannot_say():
    problems = [
        str(problem)
        for problem in triggers_problems(
            [
                {"type": "regex", "pattern": "(a+)+"},
                {"type": "callback", "data": "é" * 33},  # 33 characters, 66 bytes
            ]
        )
    ]
    assert problems[0].startswith("trigger 1: 'pattern': the pattern repeats a part")
    assert problems[1] == "trigger 2: 'data': callback data is longer than 64 bytes"
