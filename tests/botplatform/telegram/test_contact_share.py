"""The "share my phone" button through the real Telegram path (Bot API double, journal,
dispatch, handler, engine): the user's own contact is taken in E.164, a forged or
forwarded one is refused with a retry, and the keyboard is removed afterwards."""

from __future__ import annotations

import json

import pytest

from botplatform.telegram.dispatch import update_run
from botplatform.telegram.journal import updates_record
from tests.workflows.conftest import publish
from users.models import UserVariable

CHAT = 730001

ASK_PHONE = {
    "start": "ask",
    "steps": {
        "ask": {
            "type": "input",
            "text": "May we have your phone number?",
            "variable": "phone",
            "validate": {"type": "contact"},
            "retry_text": "Please use the button: {{ user.first_name }}, it sends your own number.",
            "next": "thanks",
        },
        "thanks": {"type": "message", "text": "Thank you!"},
    },
}


def _run(double, bot, update: dict) -> None:
    rows = updates_record(bot_id=bot.pk, updates=[update])
    assert update_run(update_pk=rows[0].pk) == "done"


def _markup(double, chat: int) -> dict:
    message = double.messages[(chat, double.last_message[chat])]
    markup = message.get("reply_markup") or {}
    return json.loads(markup) if isinstance(markup, str) else markup


def _phone(bot, chat: int):
    row = UserVariable.objects.filter(
        user__project=bot.project, user__telegram_id=chat, key="phone"
    ).first()
    return None if row is None else row.value


@pytest.fixture
def asking(double, tg_bot):
    publish(tg_bot.project, ASK_PHONE)
    _run(double, tg_bot, double.command(tg_bot.token, CHAT, "/start"))
    return tg_bot


def test_the_question_shows_a_one_time_share_my_phone_button(double, asking):
    assert double.sent_texts(asking.token, CHAT) == ["May we have your phone number?"]
    markup = _markup(double, CHAT)
    assert markup["keyboard"][0] == [{"text": "📱 Share my phone number", "request_contact": True}]
    assert markup["one_time_keyboard"] is True


def test_the_users_own_contact_is_stored_in_e164_and_the_keyboard_removed(double, asking):
    _run(double, asking, double.contact(asking.token, CHAT, "44 7911 123456"))

    assert _phone(asking, CHAT) == "+447911123456"
    assert double.sent_texts(asking.token, CHAT)[-1] == "Thank you!"
    assert _markup(double, CHAT) == {"remove_keyboard": True}


@pytest.mark.parametrize(
    ("forgery", "says"),
    [
        ({"contact_user_id": 999}, "not your own contact"),  # someone else's, from the book
        ({"contact_user_id": None}, "not your own contact"),  # not on Telegram at all
        ({"forwarded_from": 999}, "forwarded"),  # their own card, forwarded by someone
    ],
)
def test_a_forged_or_forwarded_contact_is_refused_with_a_retry(double, asking, forgery, says):
    # A forwarded contact card keeps its owner's id: here even the sender's own (a
    # card they once sent elsewhere, forwarded back) is refused, as it proves nothing.
    _run(double, asking, double.contact(asking.token, CHAT, "+447911123456", **forgery))

    assert _phone(asking, CHAT) is None
    retry = double.sent_texts(asking.token, CHAT)[-1]
    assert retry.startswith("Please use the button: User730001")
    markup = _markup(double, CHAT)
    assert markup["keyboard"][0][0]["request_contact"] is True  # asked again, with the button

    # The real button still works after a refusal.
    _run(double, asking, double.contact(asking.token, CHAT, "+44 7911 123456"))
    assert _phone(asking, CHAT) == "+447911123456"


def test_a_refusal_without_retry_text_says_why(double, tg_bot):
    definition = json.loads(json.dumps(ASK_PHONE))
    del definition["steps"]["ask"]["retry_text"]
    publish(tg_bot.project, definition)
    _run(double, tg_bot, double.command(tg_bot.token, CHAT, "/start"))
    _run(double, tg_bot, double.contact(tg_bot.token, CHAT, "+447911123456", forwarded_from=5))
    assert "forwarded" in double.sent_texts(tg_bot.token, CHAT)[-1]
    _run(double, tg_bot, double.message(tg_bot.token, CHAT, "+447911123456"))
    assert "press the button" in double.sent_texts(tg_bot.token, CHAT)[-1]
    assert _phone(tg_bot, CHAT) is None


def test_a_contact_with_an_impossible_number_is_refused(double, asking):
    _run(double, asking, double.contact(asking.token, CHAT, "12"))
    assert _phone(asking, CHAT) is None
    assert double.sent_texts(asking.token, CHAT)[-1].startswith("Please use the button")


def test_a_shared_phone_links_the_customer_and_merges_the_till_customer(double, asking):
    from users.customers import customer_create
    from users.ledger import bonus_earn
    from users.models import BotUser

    till, created = customer_create(project_id=asking.project_id, phone="+44 7911 123456")
    assert created
    bonus_earn(user_id=till.pk, amount=70, idempotency_key="till-receipt-1")

    _run(double, asking, double.contact(asking.token, CHAT, "447911123456"))

    me = BotUser.objects.get(project=asking.project, telegram_id=CHAT)
    till.refresh_from_db()
    assert (me.phone, me.balance) == ("+447911123456", 70)
    assert me.phone_linked_at is not None  # counted on the dashboard from that moment
    assert (till.merged_into_id, till.phone, till.balance) == (me.pk, "", 0)
    assert till.phone_linked_at is None  # typed at the till, never shared in the bot
    assert list(me.transactions.values_list("kind", "amount")) == [("merge", 70)]


def test_a_forged_contact_links_nothing(double, asking):
    from users.models import BotUser

    _run(double, asking, double.contact(asking.token, CHAT, "+447911123456", contact_user_id=5))
    _run(double, asking, double.contact(asking.token, CHAT, "+447911123456", forwarded_from=5))
    me = BotUser.objects.get(project=asking.project, telegram_id=CHAT)
    assert (me.phone, me.phone_linked_at) == ("", None)


def test_a_contact_nobody_asked_for_is_still_linked_and_acknowledged(double, tg_bot):
    from users.models import BotUser

    _run(double, tg_bot, double.contact(tg_bot.token, CHAT, "+1 202 555 0143"))
    assert BotUser.objects.get(project=tg_bot.project, telegram_id=CHAT).phone == "+12025550143"
    assert double.sent_texts(tg_bot.token, CHAT) == ["✅ Thank you! Your phone number is saved."]
    assert _markup(double, CHAT) == {"remove_keyboard": True}

    _run(double, tg_bot, double.contact(tg_bot.token, CHAT + 1, "+12025550144", contact_user_id=7))
    assert "button" in double.sent_texts(tg_bot.token, CHAT + 1)[0]
