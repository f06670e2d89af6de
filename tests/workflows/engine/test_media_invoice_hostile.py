"""Hostile input for the new parsers and checks: invoice payloads (they come back from
Telegram, i.e. from outside) and the media/album/location fields of a message step.
Bounded time, a clear verdict, never an exception."""

from __future__ import annotations

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from workflows.engine.steps.base import Checker
from workflows.engine.steps.invoice import invoice_payload, invoice_payload_parse
from workflows.engine.steps.message import MessageStep

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=12)
        | st.dictionaries(st.text(max_size=10), children, max_size=8)
    ),
    max_leaves=60,
)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_any_payload_parses_to_ours_or_none(payload):
    parsed = invoice_payload_parse(payload)
    if parsed is not None:
        execution_id, seq, step_id = parsed
        assert invoice_payload(execution_id, seq, step_id) == payload


def test_payload_round_trip_and_absurd_numbers():
    assert invoice_payload_parse(invoice_payload(12, 3, "buy:now")) == (12, 3, "buy:now")
    assert invoice_payload_parse("inv:" + "9" * 5000 + ":1:x") is None
    assert invoice_payload_parse("inv:1:\x00:x") is None
    assert invoice_payload_parse("other:1:1:x") is None


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(media=JSON, album=JSON, location=JSON, text=st.text(max_size=1100))
def test_the_media_checks_never_raise_and_say_what_is_wrong(media, album, location, text):
    step = {"type": "message", "text": text, "media": media, "album": album, "location": location}
    checker = Checker("a", step)
    MessageStep().check(checker)
    assert all(isinstance(problem, str) and problem for problem in checker.problems)
    present = [key for key in ("media", "album", "location") if step[key]]
    if len(present) > 1:
        assert any("use one of" in problem for problem in checker.problems)
