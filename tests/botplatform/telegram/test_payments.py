"""A Telegram Stars payment through the double: invoice, pre-checkout (answered from
the database: still awaited, same amount, in stock), successful payment (continues
the conversation, credits bonuses once per charge, even when replayed), refund."""

from __future__ import annotations

import pytest

from botplatform.telegram.client import api
from botplatform.telegram.dispatch import update_run
from botplatform.telegram.journal import updates_record
from tests.workflows.conftest import publish
from users.models import BonusTransaction, BotUser, Payment
from workflows.payments import CHANGED, EXPIRED, SOLD_OUT, RefundRefused, payment_refund

CHAT = 9601
SHOP = {
    "start": "buy",
    "steps": {
        "buy": {
            "type": "invoice",
            "title": "VIP pass",
            "text": "A month of VIP for {{ user.first_name }}",
            "currency": "XTR",
            "amount": 50,
            "item": "vip-pass",
            "stock": 1,
            "bonus": 500,
            "next": "thanks",
        },
        "thanks": {"type": "message", "text": "Paid! Balance {{ user.balance }}"},
    },
}


@pytest.fixture
def shop(tg_bot, settings):
    settings.TELEGRAM_EVENT_HANDLER = "workflows.handler.handler"
    publish(tg_bot.project, SHOP)
    return tg_bot


def _handle(bot, offset: dict) -> None:
    updates = api().get_updates(bot.token, offset=offset.get("next"), limit=100)
    offset["next"] = max(u["update_id"] for u in updates) + 1
    for row in updates_record(bot_id=bot.pk, updates=updates):
        assert update_run(update_pk=row.pk) == "done"


def _invoice(double, shop, offset, chat=CHAT) -> str:
    double.command(shop.token, chat, "/start")
    _handle(shop, offset)
    invoice = double.invoices[-1]
    assert (invoice["currency"], invoice["title"]) == ("XTR", "VIP pass")
    assert "provider_token" not in invoice or invoice["provider_token"] == ""
    return invoice["payload"]


@pytest.mark.django_db(transaction=True)
def test_a_stars_payment_is_checked_credited_once_and_refunded_once(double, shop):
    offset: dict = {}
    payload = _invoice(double, shop, offset)
    wrong = double.pre_checkout(shop.token, CHAT, payload, amount=49)
    right = double.pre_checkout(shop.token, CHAT, payload, amount=50)
    _handle(shop, offset)
    assert double.pre_checkout_answers[wrong] == (False, CHANGED)
    assert double.pre_checkout_answers[right] == (True, "")
    charge = double.paid(shop.token, CHAT, payload, amount=50)
    _handle(shop, offset)
    assert double.sent_texts(shop.token, CHAT)[-1] == "Paid! Balance 500"
    # Telegram delivers the same payment again (a new update, the same charge).
    double.paid(shop.token, CHAT, payload, amount=50, charge_id=charge)
    _handle(shop, offset)
    user = BotUser.objects.get(telegram_id=CHAT)
    assert user.balance == 500
    assert BonusTransaction.objects.filter(user=user).count() == 1
    payment = Payment.objects.get()
    assert (payment.charge_id, payment.amount, payment.item, payment.bonus) == (
        charge,
        50,
        "vip-pass",
        500,
    )
    # Refund from the admin's action: once.
    assert payment_refund(payment_id=payment.pk) is True
    assert payment_refund(payment_id=payment.pk) is False
    assert double.refunded == {charge}
    payment.refresh_from_db()
    assert payment.status == Payment.Status.REFUNDED


@pytest.mark.django_db(transaction=True)
def test_pre_checkout_refuses_a_stale_invoice_and_a_sold_out_item(double, shop):
    offset: dict = {}
    first = _invoice(double, shop, offset)
    second = _invoice(double, shop, offset)  # /start again: the first invoice is stale
    stale = double.pre_checkout(shop.token, CHAT, first, amount=50)
    _handle(shop, offset)
    assert double.pre_checkout_answers[stale] == (False, EXPIRED)
    double.paid(shop.token, CHAT, second, amount=50)
    _handle(shop, offset)
    other = CHAT + 1  # stock 1: sold out for the next buyer
    payload = _invoice(double, shop, offset, chat=other)
    query = double.pre_checkout(shop.token, other, payload, amount=50)
    _handle(shop, offset)
    assert double.pre_checkout_answers[query] == (False, SOLD_OUT)


@pytest.mark.django_db(transaction=True)
def test_a_refund_telegram_refuses_changes_nothing(double, shop):
    offset: dict = {}
    payload = _invoice(double, shop, offset)
    double.paid(shop.token, CHAT, payload, amount=50)
    _handle(shop, offset)
    payment = Payment.objects.get()
    double.charges.clear()  # Telegram no longer knows the charge
    with pytest.raises(RefundRefused, match="CHARGE_NOT_FOUND"):
        payment_refund(payment_id=payment.pk)
    payment.refresh_from_db()
    assert payment.status == Payment.Status.PAID
