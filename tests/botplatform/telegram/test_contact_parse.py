"""A shared contact as the transport reads it (updates.update_parse): the phone and the
owner's id come through, a forward is noticed, and hostile values are refused cleanly."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from botplatform.telegram.updates import MalformedUpdate, UnsupportedUpdate, update_parse
from tests.botplatform.telegram.test_hostile_updates import ints, json_values, texts


def _update(contact: object, **extra) -> dict:
    return {
        "update_id": 7,
        "message": {
            "message_id": 3,
            "from": {"id": 42, "is_bot": False, "first_name": "Ann"},
            "chat": {"id": 42, "type": "private"},
            "date": 1,
            "contact": contact,
            **extra,
        },
    }


def test_the_senders_own_contact():
    parsed = update_parse(
        bot_id=1, update=_update({"phone_number": "447911123456", "first_name": "A", "user_id": 42})
    )
    event = parsed.event
    assert (event.kind, event.contact_phone, event.contact_user_id, event.forwarded) == (
        "contact",
        "447911123456",
        42,
        False,
    )
    assert parsed.telegram_id == 42 and event.event_id == "bot:1:update:7"


def test_a_forwarded_contact_is_marked_forwarded():
    origin = {
        "type": "user",
        "date": 1,
        "sender_user": {"id": 9, "is_bot": False, "first_name": "B"},
    }
    parsed = update_parse(
        bot_id=1,
        update=_update(
            {"phone_number": "+447911123456", "first_name": "A", "user_id": 42},
            forward_origin=origin,
        ),
    )
    assert parsed.event.forwarded is True


def test_an_address_book_contact_has_no_owner():
    parsed = update_parse(bot_id=1, update=_update({"phone_number": "+1 202", "first_name": "A"}))
    assert parsed.event.contact_user_id is None


@pytest.mark.parametrize(
    "contact",
    [
        {"phone_number": "", "first_name": "A", "user_id": 42},
        {"phone_number": "1" * 65, "first_name": "A", "user_id": 42},
        {"phone_number": 447911123456, "first_name": "A", "user_id": 42},
        {"phone_number": "+44", "first_name": "A", "user_id": 2**64},
        {"phone_number": "+44", "first_name": "A", "user_id": "42"},
    ],
)
def test_a_broken_contact_is_malformed(contact):
    with pytest.raises(MalformedUpdate):
        update_parse(bot_id=1, update=_update(contact))


contacts = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"phone_number": st.one_of(texts, ints, st.none()), "first_name": texts},
        optional={"user_id": st.one_of(ints, texts, st.none()), "vcard": texts},
    ),
)


@settings(max_examples=300, deadline=None)
@given(contacts, st.one_of(st.none(), json_values))
def test_any_contact_is_parsed_or_refused_with_a_reason(contact, forward):
    extra = {} if forward is None else {"forward_origin": forward}
    try:
        parsed = update_parse(bot_id=1, update=_update(contact, **extra))
    except (MalformedUpdate, UnsupportedUpdate) as exc:
        assert str(exc)
        return
    event = parsed.event
    assert event.kind == "contact"
    assert isinstance(event.contact_phone, str) and 0 < len(event.contact_phone) <= 64
    assert "\x00" not in event.contact_phone
    assert event.contact_user_id is None or isinstance(event.contact_user_id, int)
