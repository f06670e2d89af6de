"""What a cashier types into the menu (workflows/cashier.py), as hostile input: any card
code or amount gets an answer in bounded time, and nothing is written but a real
purchase for a real card."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botplatform.conversation import InputEvent, SendMessage
from tests.factories import bot_create, bot_user_create
from users.customers import card_code_ensure
from users.models import Cashier, EarnRule, Hold, Purchase
from workflows.cashier import cashier_handle

CASHIER = 760001
typed = st.one_of(
    st.text(max_size=80),
    st.text(st.characters(exclude_categories=()), max_size=40),  # surrogates too
    st.sampled_from(
        ["\x00" * 20, "1" * 10_000, "٣" * 12, "1234-5678-90\uff11\uff12", "NaN", "1e999"]
    ),
)


@pytest.fixture
def till(db):
    bot = bot_create()
    cashier_user = bot_user_create(project=bot.project, telegram_id=CASHIER)
    customer = bot_user_create(project=bot.project)
    card_code_ensure(customer)
    EarnRule.objects.create(project=bot.project, name="5 %", percent=Decimal(5))
    Cashier.objects.create(project=bot.project, telegram_id=CASHIER, store_name="Store 1")
    return bot, cashier_user, customer


def _say(bot, user, text: str, update_id: int = 1):
    return cashier_handle(
        bot=bot,
        user=user,
        chat_id=CASHIER,
        event=InputEvent(kind="text", text=text, event_id=f"e{update_id}"),
        update_id=update_id,
    )


def _open(bot, user, step: str, customer_id: int | None = None) -> None:
    from django.core.cache import cache

    from botplatform.cache import cashier_state_key

    state = {"step": step} | ({"customer": customer_id} if customer_id else {})
    cache.set(cashier_state_key(bot.pk, CASHIER), state, 60)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=typed)
def test_any_typed_card_code_is_answered(till, text):
    bot, user, customer = till
    _open(bot, user, "card")
    actions = _say(bot, user, text)
    assert actions and all(isinstance(a, SendMessage) and a.text for a in actions)
    if text.replace(" ", "").replace("-", "") != customer.card_code:
        assert "Customer:" not in actions[0].text


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=typed)
def test_any_typed_amount_is_answered_and_only_real_amounts_are_recorded(till, text):
    bot, user, customer = till
    _open(bot, user, "accrue", customer.pk)
    before = Purchase.objects.count()
    actions = _say(bot, user, text, update_id=abs(hash(text)) % 10**9)
    assert actions and actions[0].text
    recorded = Purchase.objects.count() - before
    assert recorded in (0, 1)
    assert recorded == ("recorded" in actions[0].text)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=typed)
def test_any_typed_redemption_is_answered(till, text):
    bot, user, customer = till
    _open(bot, user, "redeem", customer.pk)
    actions = _say(bot, user, text)
    assert actions and actions[0].text
    assert not Hold.objects.exists()  # the customer has no bonuses: nothing is ever held
